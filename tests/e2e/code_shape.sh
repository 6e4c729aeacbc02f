#!/usr/bin/env bash
# tests/e2e/code_shape.sh — the shape rules of recipes/README.md that a machine can check: no function
# outside tests/ is 120 lines or longer (counted from the line that opens it to its closing brace), and
# no code comment cites DESIGN.md (the design lives in the folder READMEs).
set -euo pipefail
cd "$KOE_ROOT"
"$PYTHON" - $(git ls-files '*.c' 2>/dev/null | grep -v '^tests/' || find core data distributed recipes analysis -name '*.c') << 'PY'
import re, sys
LIMIT = 120
bad = []
opener = re.compile(r"^[A-Za-z_][\w \*]*\b(\w+)\s*\([^;]*$")  # a definition starts at column 0
for path in sys.argv[1:]:
    lines = open(path, encoding="utf-8").read().split("\n")
    name, start = None, None
    for i, line in enumerate(lines):
        if start is None:
            m = opener.match(line)
            if m and not line.startswith(("typedef", "static const", "const ", "extern", "#")) and "=" not in line:
                name, start = m.group(1), i
        elif line.startswith("}"):
            n = i - start + 1
            if n >= LIMIT:
                bad.append(f"{path}:{start + 1}: {name} is {n} lines (limit {LIMIT - 1})")
            name, start = None, None
        elif line.endswith(";") and not line.startswith((" ", "\t")) and i == start + 1:
            name, start = None, None  # a prototype that wrapped
print(f"{len(sys.argv) - 1} files checked")
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
if grep -rn "DESIGN\.md" --include='*.c' --include='*.h' core data distributed recipes analysis; then
  echo "FAIL: comments above cite DESIGN.md; point them at the folder READMEs"; exit 1
fi
echo "no function of 120 lines or more, no comment citing DESIGN.md"

"""jsonl_check.py — every line of each log.jsonl named on the command line is one strict JSON object
(JSON has no NaN or Infinity: koe writes a non-finite value as null; Python's json would accept them,
so they are refused here), with an integer "step" and numbers or null in every other field but
"version" (a string, on a run's first line). Prints the count; exits 1 naming the file and line.

    python3 jsonl_check.py RUN/log.jsonl ..."""
import json
import sys


def refuse(name):
    raise ValueError(f"{name} is not JSON (koe writes null)")


def check_line(text):
    row = json.loads(text, parse_constant=refuse)
    assert isinstance(row, dict), "not an object"
    assert isinstance(row.get("step"), int), "no integer step"
    for k, v in row.items():
        if k == "version":
            assert isinstance(v, str), "version is not a string"
        else:
            assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)), f"{k}: {v!r}"


# the check itself: what it must refuse
for bad in ('{"step": 1, "loss": NaN}', '{"step": 1, "loss": Infinity}', '{"step": 1, "loss": 1.0', '[1]',
            '{"loss": 1.0}', '{"step": 1, "loss": "1.0"}'):
    try:
        check_line(bad)
    except (ValueError, AssertionError):
        continue
    sys.exit(f"jsonl_check: accepted {bad!r}")

lines = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for i, text in enumerate(f, 1):
            try:
                check_line(text)
            except (ValueError, AssertionError) as e:
                sys.exit(f"{path}:{i}: {e}: {text.strip()[:200]}")
            lines += 1
print(f"{len(sys.argv) - 1} log.jsonl files, {lines} lines: every line a JSON object")

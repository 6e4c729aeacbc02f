#!/usr/bin/env bash
# progress.sh — every long command shows the one progress line (core/progress.h). With stderr in a file
# and KOE_PROGRESS_S=0, koe prepare, features, kmeans, label, analyze labels, embed and analyze layers
# each print "koe: WHAT DONE/TOTAL UNIT (P%), RATE UNIT/s, eta XmYYs" lines whose counts rise to the
# total, whose percentage is done/total and whose ETA is (total - done) / rate; at the default
# interval (10 s) a command this short prints none. On a terminal (script(1) gives one) the line is
# rewritten with \r — koe features, and koe train's step line with its loss — and ended before the
# next message (from any thread); no \r reaches a file. koe train ends saying what monitoring cost.
set -euo pipefail
T="$KOE_TMP/progress"
rm -rf "$T" && mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1
"$KOE" synth --out syn --minutes 0.5 --langs en 2> /dev/null
"$KOE" init "$KOE_ROOT/recipes/tiny/bestrq.ini" --out ck.h5 2> /dev/null

export KOE_PROGRESS_S=0
"$KOE" prepare --out corp --align syn/align.ctm syn/wav 2> prepare.log
"$KOE" features --corpus corp --kind mfcc --out f.h5 2> features.log
"$KOE" kmeans --corpus corp --source mfcc --k 5 --iters 2 --out km.h5 2> kmeans.log
"$KOE" label --corpus corp --kmeans km.h5 --name km 2> label.log
"$KOE" analyze labels --corpus corp --labels km > /dev/null 2> analyze_labels.log
"$KOE" embed --ckpt ck.h5 --layer 1 --corpus corp --out e.h5 2> embed.log
"$KOE" analyze layers --ckpt ck.h5 --corpus corp --props cka > /dev/null 2> analyze_layers.log
n_utts=$("$PYTHON" -c "import h5py; print(len(h5py.File('f.h5')['utt_id']))")

"$PYTHON" - "$n_utts" << 'PY'
import re, sys
n = int(sys.argv[1])
line = re.compile(r"^koe: (?P<what>[a-z ]+?) (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
                  r"(?P<rate>[0-9.e+]+) (?P=unit)/s, eta (?:(?P<m>\d+)m(?P<s>\d\d)s|(?P<h>\d+)h(?P<hm>\d\d)m)(?:, .*)?$")
for log, what, unit, passes in [("prepare", "prepare", "file", 1), ("features", "features", "utt", 1),
                                ("kmeans", "kmeans pass", "utt", 3), ("label", "label", "utt", 1),
                                ("analyze_labels", "analyze labels", "utt", 1), ("embed", "embed", "utt", 1),
                                ("analyze_layers", "analyze layers", "utt", 1)]:
    text = open(f"{log}.log").read()
    assert "\r" not in text, f"{log}: a carriage return in a file"
    rows = [m for m in map(line.match, text.splitlines()) if m and m["what"] == what]
    assert rows, f"{log}: no progress line\n{text}"
    assert len(rows) == passes * n, f"{log}: {len(rows)} progress lines, want one per {unit} ({passes} x {n})"
    prev = 0
    for m in rows:
        done, total, rate = int(m["done"]), int(m["total"]), float(m["rate"])
        assert m["unit"] == unit and total == n, (log, m.group(0))
        assert done == prev % n + 1, (log, "counts go up by one per pass", m.group(0))
        prev = done
        assert int(m["pct"]) == 100 * done // total, (log, m.group(0))
        assert rate > 0, (log, m.group(0))
        eta = int(m["m"]) * 60 + int(m["s"]) if m["m"] else int(m["h"]) * 3600 + int(m["hm"]) * 60
        want = (total - done) / rate
        # the rate is printed to 3 significant digits, the ETA rounded to the second (minute past an hour)
        assert abs(eta - want) <= 0.5 + 0.006 * want + (30 if m["h"] else 0), (log, m.group(0), want)
    assert done == n, f"{log}: the last line is not {n}/{n}"
print("progress lines: prepare, features, kmeans, label, analyze labels, embed, analyze layers")
PY

# the default interval: nothing from a command this short
unset KOE_PROGRESS_S
"$KOE" features --corpus corp --kind mfcc --out f2.h5 2> quiet.log
! grep -q " utt/s" quiet.log || { cat quiet.log; echo "FAIL: a progress line before 10 s"; exit 1; }

# a terminal: the line rewritten in place, then ended before the next message
script -qec "\"$KOE\" features --corpus corp --kind mfcc --out f3.h5" /dev/null > tty.out
script -qec "\"$KOE\" train \"$KOE_ROOT/recipes/tiny/bestrq.ini\" data.corpus=corp optim.max_updates=3 \
    optim.warmup=1 run.log_every=3 run.save_every=3 run.dir=run" /dev/null > tty_train.out
"$PYTHON" - << 'PY'
import re
feat = open("tty.out", "rb").read().decode()
assert re.search(r"\rkoe: features \d+/\d+ utt \(\d+%\), [0-9.e+]+ utt/s, eta \d+m\d\ds *\r\n"
                 r"koe: features: wrote f3\.h5", feat), repr(feat)
train = open("tty_train.out", "rb").read().decode()
assert re.search(r"\rkoe: train 3/3 step \(100%\), [0-9.e+]+ step/s, eta 0m00s, loss [0-9.]+ acc [0-9.]+ gnorm [0-9.e+-]+",
                 train), repr(train)
# on a terminal koe train's log lines give way to the rewritten line; its messages start on a line of their own
assert "koe: step 3/3 loss" not in train, repr(train)
# its last message: what monitoring cost, as a share of the update time
assert re.search(r"koe: done: 3 steps, 0 skipped; checkpoint run/checkpoints/latest; monitoring \(log lines, TensorBoard, "
                 r"health checks, BEST-RQ code counts, HuBERT acc_u\) took [0-9.]+ s, [0-9.]+% of the [0-9.]+ s of updates",
                 train), repr(train)
for out in (feat, train):  # every message, from any thread, starts a line
    assert not re.search(r"[^\r\n]koe: |\rkoe: [^ft]", out), repr(out)
print("terminal: \\r-rewritten lines for koe features and koe train")
PY
echo "progress: OK"

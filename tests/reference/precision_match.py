"""precision_match.py — training equivalence of run.precision = bf16 with fp32 (tests/e2e/train_*.sh).

Usage: /usr/bin/python3 precision_match.py FP32_RUN/log.jsonl BF16_RUN/log.jsonl
The two runs are the same recipe, seed and batches, differing only in run.precision. Their final
loss and masked accuracy (each the mean over the last 10% of log lines, as the train tests judge
progress) must agree: bf16 loss within 2% of fp32's, accuracy within 0.01 (issue 14's criterion).
Both runs must have logged the same steps and skipped the same updates."""
import json
import sys


def final(path):
    rows = [json.loads(line) for line in open(path)]
    n = max(1, len(rows) // 10)
    last = rows[-n:]
    return rows, sum(r["loss"] for r in last) / n, sum(r["acc"] for r in last) / n


a, la, aa = final(sys.argv[1])
b, lb, ab = final(sys.argv[2])
assert [r["step"] for r in a] == [r["step"] for r in b], "the runs logged different steps"
# an update is skipped when its batch has no masked frame (the same batches and masks in both runs)
assert [r["skipped"] for r in a] == [r["skipped"] for r in b], "the runs skipped different updates"
rel = abs(lb - la) / abs(la)
print(f"final (last 10% of lines, to step {a[-1]['step']}): loss fp32 {la:.4f} bf16 {lb:.4f} (rel {rel:.4f}); "
      f"acc fp32 {aa:.4f} bf16 {ab:.4f} (diff {abs(ab - aa):.4f})")
assert rel <= 0.02, f"bf16 final loss {lb:.4f} is not within 2% of fp32's {la:.4f}"
assert abs(ab - aa) <= 0.01, f"bf16 final accuracy {ab:.4f} is not within 0.01 of fp32's {aa:.4f}"

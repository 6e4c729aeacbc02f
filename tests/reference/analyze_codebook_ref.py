#!/usr/bin/env python3
"""numpy reference for `koe analyze codebook` (recipes/analyze_codebook.c).

  /usr/bin/python3 analyze_codebook_ref.py CODEBOOK.json CODES.tsv CORPUS_DIR [CKPT.h5 FBANK.h5]

From the codes koe dumped (`--dump`, one line per frame) and the corpus's phone alignments (each
shard's /align, read with h5py), recomputes every codebook's histogram (exact), code perplexity
(fairseq's sum_g exp(-sum_v a log(a + 1e-7))), and the codes as labels against the phones: the
HuBERT paper's phone purity, cluster purity and PNMI, with 10 ms alignment frame j taking the code of
encoder frame floor(j * rate / 100), frames without a phone (0xFFFF) or past the codes skipped, per
codebook and for the joint code sum_g code_g V^g. Written from the formulas, not from the C code.
With CKPT.h5 and FBANK.h5 (`koe features --kind fbank`) of a BEST-RQ checkpoint, also recomputes
the codes: per utterance and bin (x - mean) / sqrt(var + 1e-5) (model.fbank_norm = utterance),
`stack` frames per row, z = row @ projection_q, code = argmax_c codebook_q[c] . z; every koe code must
score within 1e-5 (relative) of the best (ties and float32 near-ties may pick another index).
Asserts agreement to 1e-9; exit 1 on a mismatch.
"""
import collections
import json
import math
import sys

import h5py
import numpy as np

js = json.load(open(sys.argv[1]))
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[2])][1:]
corpus = sys.argv[3]
G, V, rate = js["codebooks"], js["entries"], js["frame_rate"]
codes = collections.OrderedDict()
for r in rows:
    codes.setdefault(r[0], []).append([int(c) for c in r[2:]])
codes = {u: np.array(c, dtype=np.int64) for u, c in codes.items()}
allc = np.concatenate(list(codes.values()))
assert allc.shape == (js["frames"], G), (allc.shape, js["frames"], G)


def ppl(counts, n):
    a = counts / n
    return math.exp(-(a * np.log(a + 1e-7)).sum())


worst = 0.0
total = 0.0
for g in range(G):
    h = np.bincount(allc[:, g], minlength=V).astype(np.float64)
    b = js["per_codebook"][g]
    assert list(h.astype(np.int64)) == b["counts"], f"codebook {g}: histogram differs"
    assert b["used"] == int((h > 0).sum())
    p = ppl(h, len(allc))
    total += p
    worst = max(worst, abs(p - b["code_perplexity"]) / p)
worst = max(worst, abs(total - js["code_perplexity"]) / total)
print(f"histograms equal; code perplexity {total:.4f} (koe {js['code_perplexity']:.4f})")

# the alignments, phones matched across shards by name
with h5py.File(f"{corpus}/corpus.h5", "r") as f:
    shards = [s.decode() if isinstance(s, bytes) else s for s in f["shards"][()]]
align, phones = {}, {}
for s in shards:
    with h5py.File(f"{corpus}/{s}", "r") as f:
        ids = [u.decode() if isinstance(u, bytes) else u for u in f["utt/id"][()]]
        names = [p.decode() if isinstance(p, bytes) else p for p in f["align/phones"][()]]
        frames, off = f["align/frames"][()], f["align/offset"][()]
        gid = np.array([phones.setdefault(n, len(phones)) for n in names] + [-1])
        for i, u in enumerate(ids):
            a = frames[off[i]:off[i + 1]].astype(np.int64)
            align[u] = np.where(a == 0xFFFF, -1, gid[np.minimum(a, len(names))])


def measures(label_of):
    joint = collections.Counter()
    for u, c in codes.items():
        a = align[u]
        j = np.arange(len(a))
        k = np.floor(j * rate / 100 + 0).astype(np.int64)
        ok = (a >= 0) & (k < len(c))
        for ph, lab in zip(a[ok], label_of(c)[k[ok]]):
            joint[(ph, lab)] += 1
    n = sum(joint.values())
    py, pz = collections.Counter(), collections.Counter()
    best_y, best_z = collections.defaultdict(int), collections.defaultdict(int)
    for (y, z), m in joint.items():
        py[y] += m
        pz[z] += m
        best_z[z] = max(best_z[z], m)
        best_y[y] = max(best_y[y], m)
    mi = sum(m / n * math.log(m * n / (py[y] * pz[z])) for (y, z), m in joint.items())
    hy = -sum(m / n * math.log(m / n) for m in py.values())
    return dict(pnmi=mi / hy, phone_purity=sum(best_z.values()) / n, cluster_purity=sum(best_y.values()) / n, frames=n)


def compare(name, got, ref):
    global worst
    assert got["frames"] == ref["frames"], (name, got["frames"], ref["frames"])
    d = max(abs(got[k] - ref[k]) for k in ("pnmi", "phone_purity", "cluster_purity"))
    worst = max(worst, d)
    print(f"{name}: PNMI koe {got['pnmi']:.6f} ref {ref['pnmi']:.6f}, purities |d| {d:.2e}")


for g in range(G):
    compare(f"codebook {g}", js["per_codebook"][g]["phones"], measures(lambda c, g=g: c[:, g]))
if js["joint"] is not None:
    compare("joint", js["joint"], measures(lambda c: sum(c[:, h] * V ** h for h in range(G))))

if len(sys.argv) > 5 and js["objective"] == "bestrq":
    with h5py.File(sys.argv[4], "r") as f:
        cfg = f["config"][()]
        cfg = (cfg[0] if isinstance(cfg, np.ndarray) else cfg)
        cfg = cfg.decode() if isinstance(cfg, bytes) else str(cfg)
        stack = int(next(l.split("=")[1] for l in cfg.splitlines() if l.startswith("fbank_stack")))
        assert "fbank_norm = utterance" in cfg
        proj = [f[f"model/quantizer.{q}.projection"][()].astype(np.float64) for q in range(G)]
        book = [f[f"model/quantizer.{q}.codebook"][()].astype(np.float64) for q in range(G)]
    with h5py.File(sys.argv[5], "r") as f:
        fb, off = f["feats"][()], f["offset"][()]
        fids = [u.decode() if isinstance(u, bytes) else u for u in f["utt_id"][()]]
    checked = differ = 0
    for i, u in enumerate(fids):
        x = fb[off[i]:off[i + 1]].astype(np.float64)
        x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        T = len(x) // stack
        rowsx = x[:T * stack].reshape(T, stack * x.shape[1])
        assert T == len(codes[u]), (u, T, len(codes[u]))
        for q in range(G):
            s = (rowsx @ proj[q]) @ book[q].T  # (T, C)
            best = s.max(1)
            mine = s[np.arange(T), codes[u][:, q]]
            assert np.all(mine >= best - 1e-5 * np.abs(best)), f"{u}: a koe code is not the nearest"
            differ += int((s.argmax(1) != codes[u][:, q]).sum())
            checked += T
    print(f"BEST-RQ codes recomputed: {checked} frames, {differ} near-ties resolved otherwise")

print(f"analyze codebook reference: every measure within {worst:.2e}")
assert worst < 1e-9, f"FAIL: koe and the reference differ by {worst}"

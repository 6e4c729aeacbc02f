#!/usr/bin/env python3
"""bestrq_ref.py CASE.h5 — recompute a BEST-RQ case written by test_bestrq (KOE_BESTRQ_REF) in
PyTorch (float64) and compare it with what koe computed (core/bestrq.c):

  1. per-utterance, per-dimension mean/variance normalisation over the valid frames (padding ignored)
     -> koe.norm_feats, 1e-4 * max|ref| + 1e-5;
  2. targets: 4 stacked normalised frames @ projection, l2-normalised, nearest unit code by cosine
     (argmax), for every quantizer -> koe.targets must be identical; a frame where they differ is
     accepted only as a float rounding tie (the two codes' cosines within 1e-5), and counted;
     padding frames are -1; the codebook rows are unit norm;
  3. masks: input masks are zero on padding and are unions of mask_length spans (each run of masked
     frames is at least mask_length long unless it reaches the utterance's end); loss frames
     (koe.mask) are exactly the valid encoder frames whose stack input frames are all masked;
  4. the model input (koe.input): unmasked rows bit-identical to the normalised features, masked rows
     noise with sd noise_std (within 10%) and mean ~0, padding zero;
  5. the head: per quantizer Linear(D -> C) logits on the loss frames, cross_entropy(reduction="sum")
     averaged over quantizers, scaled by `scale`, with autograd: loss, frame count, correct count
     (ties correct) and the gradients of x and every classifier tensor (the frozen tensors' must be
     exactly zero), 1e-4 * max|ref| + 1e-5 per tensor, worst element printed.
Exit status 1 when anything disagrees. The head uses koe's targets once (2) has accepted them.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
failures = []


def compare(name, got, ref):
    got = np.asarray(got, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    maxref = float(np.abs(ref).max()) if ref.size else 0.0
    err = np.abs(got - ref)
    wi = int(np.argmax(err)) if err.size else 0
    worst = float(err[wi]) if err.size else 0.0
    tol = 1e-4 * maxref + 1e-5
    ok = worst <= tol and np.all(np.isfinite(got))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max|ref| {maxref:.4g}, max error {worst:.3e} (tol {tol:.3e})")
    if not ok:
        print(f"     {name}: worst element {wi}: koe {got[wi]:.8g}, torch {ref[wi]:.8g}")
        failures.append(name)


def check(name, cond, msg=""):
    print(f"{'ok  ' if cond else 'FAIL'} {name}{': ' + msg if msg else ''}")
    if not cond:
        failures.append(name)


def main(path):
    h = h5py.File(path, "r")
    a = {k: h.attrs[k] for k in h.attrs}
    B, Fr, T, E, S, D, Q, C, K = (int(a[k]) for k in ("B", "F", "T", "E", "S", "D", "Q", "C", "K"))
    frames = h["frames"][:]
    raw = torch.from_numpy(h["raw_feats"][:].astype(np.float64)).view(B, Fr, E)

    # 1. normalisation over valid frames
    norm = torch.zeros(B, Fr, E)
    for b in range(B):
        n = int(frames[b])
        if n:
            u = raw[b, :n]
            norm[b, :n] = (u - u.mean(0)) / torch.sqrt(u.var(0, unbiased=False) + float(a["norm_eps"]))
    koe_norm = h["koe.norm_feats"][:].reshape(B, Fr, E)
    compare("normalised features", koe_norm, norm.numpy())

    # 2. targets
    koe_t = h["koe.targets"][:].reshape(B, T, Q)
    ties = 0
    for q in range(Q):
        proj = torch.from_numpy(h[f"quantizer.{q}.projection"][:].astype(np.float64)).view(S * E, K)
        cb = torch.from_numpy(h[f"quantizer.{q}.codebook"][:].astype(np.float64)).view(C, K)
        check(f"quantizer.{q}.codebook unit rows", float((cb.norm(dim=1) - 1).abs().max()) < 1e-6)
        for b in range(B):
            tb = int(frames[b]) // S
            z = norm[b, : tb * S].reshape(tb, S * E) @ proj
            z = z / z.norm(dim=-1, keepdim=True)
            cos = z @ cb.T  # (tb, C)
            ref = cos.argmax(dim=-1).numpy()
            got = koe_t[b, :tb, q]
            check(f"targets q{q} utt{b} padding", bool(np.all(koe_t[b, tb:, q] == -1)))
            for t in np.nonzero(got != ref)[0]:
                margin = float(cos[t, ref[t]] - cos[t, got[t]]) if 0 <= got[t] < C else float("inf")
                if margin < 1e-5:
                    ties += 1
                else:
                    check(f"target q{q} utt{b} frame{t}", False,
                          f"koe code {got[t]}, nearest {ref[t]} (cosine margin {margin:.3e})")
            agree = int(np.sum(got == ref))
            print(f"     targets q{q} utt{b}: {agree}/{tb} identical, {len(np.unique(ref))} distinct codes")
    print(f"     {ties} float near-ties (cosines within 1e-5) resolved differently")
    check("targets: near ties are rare", ties <= 2)

    # 3. masks
    in_mask = h["koe.in_mask"][:].reshape(B, Fr).astype(bool)
    mask = h["koe.mask"][:].reshape(B, T).astype(bool)
    L = int(a["mask_length"])
    want = np.zeros((B, T), dtype=bool)
    for b in range(B):
        n = int(frames[b])
        check(f"input mask utt{b} zero on padding", not in_mask[b, n:].any())
        m = in_mask[b, :n]
        runs, t = [], 0
        while t < n:
            if m[t]:
                s0 = t
                while t < n and m[t]:
                    t += 1
                runs.append((s0, t))
            else:
                t += 1
        check(f"input mask utt{b} runs of >= {L} frames", all(e - s >= L or e == n for s, e in runs),
              f"{len(runs)} runs, {int(m.sum())} of {n} frames")
        tb = n // S
        want[b, :tb] = in_mask[b, : tb * S].reshape(tb, S).all(axis=1)
    check("loss frames = encoder frames with all input frames masked", bool(np.array_equal(mask, want)),
          f"{int(mask.sum())} loss frames")

    # 4. the noised model input
    inp = h["koe.input"][:].reshape(B, Fr, E)
    keep = ~in_mask
    check("unmasked input rows bit-identical to the normalised features",
          bool(np.array_equal(inp[keep], koe_norm[keep])))
    noise = inp[in_mask].astype(np.float64)
    sd, mean = float(noise.std()), float(noise.mean())
    nstd = float(a["noise_std"])
    check("masked input rows are N(0, noise_std^2) noise",
          abs(sd / nstd - 1) < 0.1 and abs(mean) < 5 * nstd / np.sqrt(noise.size)
          and not np.any(np.all(inp[in_mask] == koe_norm[in_mask], axis=1)),
          f"sd {sd:.4f} (noise_std {nstd}), mean {mean:.2e} over {noise.size} values")

    # 5. the head, with autograd
    x = torch.from_numpy(h["x"][:].astype(np.float64)).view(B, T, D).requires_grad_(True)
    sel = torch.from_numpy(mask.reshape(-1))
    tgt = torch.from_numpy(koe_t.reshape(B * T, Q).astype(np.int64))[sel]
    xs = x.view(B * T, D)[sel]
    Ws, bs, loss, correct = [], [], 0.0, 0
    for q in range(Q):
        W = torch.from_numpy(h[f"classifier.{q}.weight"][:].astype(np.float64)).view(C, D).requires_grad_(True)
        bb = torch.from_numpy(h[f"classifier.{q}.bias"][:].astype(np.float64)).requires_grad_(True)
        logits = xs @ W.T + bb
        loss = loss + F.cross_entropy(logits, tgt[:, q], reduction="sum")
        correct += int((logits.gather(1, tgt[:, q:q + 1]).squeeze(1) >= logits.max(dim=1).values).sum())
        Ws.append(W)
        bs.append(bb)
    loss = loss / Q
    (loss * float(a["scale"])).backward()
    n_sel = int(sel.sum())
    check("loss frames counted", int(a["n_frames"]) == n_sel, f"koe {int(a['n_frames'])}, torch {n_sel}")
    check("correct count", abs(float(a["n_correct"]) - correct / Q) < 1e-9,
          f"koe {float(a['n_correct'])}, torch {correct / Q}")
    compare("loss", [float(a["loss"])], [float(loss)])
    compare("grad.x", h["koe.grad.x"][:], x.grad.numpy())
    for q in range(Q):
        compare(f"grad.classifier.{q}.weight", h[f"koe.grad.classifier.{q}.weight"][:], Ws[q].grad.numpy())
        compare(f"grad.classifier.{q}.bias", h[f"koe.grad.classifier.{q}.bias"][:], bs[q].grad.numpy())
        for name in ("projection", "codebook"):
            check(f"grad.quantizer.{q}.{name} is zero", not np.any(h[f"koe.grad.quantizer.{q}.{name}"][:]))
    print(f"loss per frame {float(loss) / max(1, n_sel):.6f}, accuracy {correct / Q / max(1, n_sel):.4f}")
    if failures:
        print(f"bestrq_ref: {len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    print("bestrq_ref: koe agrees with the PyTorch reference")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bestrq_ref.py CASE.h5  (written by test_bestrq with KOE_BESTRQ_REF=CASE.h5)")
    sys.exit(main(sys.argv[1]))

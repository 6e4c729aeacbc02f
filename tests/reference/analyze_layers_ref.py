#!/usr/bin/env python3
"""numpy reference for `koe analyze layers` (spec ../shared/specs/analyze_layers.md §8.5, §6, §9).

  /usr/bin/python3 analyze_layers_ref.py LAYERS.json UNITS.tsv EMBED.h5 FBANK.h5 [EMBED2.h5]

Recomputes every PWCCA, mean rho and rho1 that koe reported (properties mel, phone, phone-frame,
intra, inter: EMBED2.h5 the hidden states of --ckpt2, word: the dumped word segments, whole spans) and the CKA matrices, from the units and folds koe dumped (`--dump`), the hidden states of
`koe embed --layer all` and the fbank of `koe features --kind fbank` of the same corpus, in float64
with numpy's eigh / svd / cholesky, written from the spec and not from the C code. Asserts agreement
within 1e-4 absolute (PWCCA, rho) and 1e-6 (CKA), and that the moment path of the held-out score
equals the row path (centred canonical variates, np.linalg.qr) to 1e-10. Canonical directions without
variance on an evaluation fold are left out as analysis/cca.h says (CCA_HELD_OUT_TOL). PNMI is not recomputed (it
depends on k-means); its values are checked to lie in [0, 1]. Exit 1 on a mismatch.
"""
import json
import sys

import h5py
import numpy as np

js = json.load(open(sys.argv[1]))
units = [line.rstrip("\n").split("\t") for line in open(sys.argv[2])][1:]


def load_feats(path):
    with h5py.File(path, "r") as f:
        feats, off = f["feats"][()], f["offset"][()]
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["utt_id"][()]]
    return feats, {u: (off[i], off[i + 1]) for i, u in enumerate(ids)}


hid, hid_at = load_feats(sys.argv[3])  # (L+1, frames, D)
fb, fb_at = load_feats(sys.argv[4])  # (frames, 80)
hid2, hid2_at = load_feats(sys.argv[5]) if len(sys.argv) > 5 else (None, None)
rate = js["model"]["frame_rate"]
step = int(round(100 / rate))
stack = step if js["model"]["frontend"] == "fbank" else 1
S = js["settings"]
F, T, EPS, TOL = S["folds"], S["trials"], S["eps"], S["null_tol"]
L1 = len(js["layers"])

frames = [(u[1], int(u[2]), int(u[4]), int(u[5]), int(u[6])) for u in units if u[0] == "frame"]
segs = [(u[1], int(u[2]), int(u[3]), int(u[4]), int(u[5])) for u in units if u[0] == "segment"]
words = [(u[1], int(u[2]), int(u[3]), int(u[4]), int(u[5])) for u in units if u[0] == "word"]


def frame_rows(layer, h=None, at=None):
    h, at = (hid, hid_at) if h is None else (h, at)
    return np.stack([h[layer, at[u][0] + i] for u, i, _, _, _ in frames]).astype(np.float64)


def mel_rows():
    rows = []
    for u, i, _, _, _ in frames:
        a, b = fb_at[u]
        idx = [min(a + i * step + k, b - 1) for k in range(stack)]
        rows.append(fb[idx].astype(np.float64).mean(0) if stack > 1 else fb[idx[0]].astype(np.float64))
    return np.stack(rows)


def seg_rows(layer, units_):
    return np.stack([hid[layer, hid_at[u][0] + a: hid_at[u][0] + b].astype(np.float64).mean(0)
                     for u, a, b, _, _ in units_])


def onehot(labels, q):
    y = np.zeros((len(labels), q))
    y[np.arange(len(labels)), labels] = 1
    return y


def comoment(Z):
    Zc = Z - Z.mean(0)
    return Zc.T @ Zc


def whiten(S, eps):
    a = np.abs(S).max()
    keep = np.where(np.diag(S) / a >= eps)[0]
    lam, V = np.linalg.eigh(S[np.ix_(keep, keep)] / a)
    r = lam > TOL * lam.max()
    return keep, V[:, r] / np.sqrt(np.maximum(lam[r] + eps, eps)), a


def fit(M, n, p, q, ex, ey):
    S = M / (n - 1)
    ix, Wx, a = whiten(S[:p, :p], ex)
    iy, Wy, b = whiten(S[p:, p:], ey)
    Sxy = S[:p, p:][np.ix_(ix, iy)] / np.sqrt(a * b)
    U, s, Vt = np.linalg.svd(Wx.T @ Sxy @ Wy, full_matrices=False)
    k = min(Wx.shape[1], Wy.shape[1])
    return dict(ix=ix, iy=iy, Ax=(Wx @ U[:, :k]).T, Ay=(Wy @ Vt.T[:, :k]).T, k=k,
                wx=Wx.shape[1] < Wy.shape[1], p=p)


HELD_OUT_TOL = 1e-9  # analysis/cca.h CCA_HELD_OUT_TOL


def kept_directions(G, vx, vy):
    """The directions that vary on the evaluation set, in order: variance above HELD_OUT_TOL of the
    largest in both views, and a part not explained by the directions kept before it above
    HELD_OUT_TOL of its variance (a Gram-Schmidt on G)."""
    keep = []
    for i in range(len(G)):
        if not (vx[i] > HELD_OUT_TOL * vx.max() and vy[i] > HELD_OUT_TOL * vy.max()):
            continue
        d = G[i, i]
        if keep:
            c = G[np.ix_(keep, [i])][:, 0]
            d -= c @ np.linalg.solve(G[np.ix_(keep, keep)], c)
        if d > HELD_OUT_TOL * G[i, i]:
            keep.append(i)
    return keep


def score(fit_, M):
    p, ix, iy = fit_["p"], fit_["ix"], fit_["iy"] + fit_["p"]
    Ax, Ay = fit_["Ax"], fit_["Ay"]
    Mxx, Myy, Mxy = M[np.ix_(ix, ix)], M[np.ix_(iy, iy)], M[np.ix_(ix, iy)]
    vx, vy = np.einsum("ij,ij->i", Ax @ Mxx, Ax), np.einsum("ij,ij->i", Ay @ Myy, Ay)
    Av, Mvv = (Ax, Mxx) if fit_["wx"] else (Ay, Myy)
    G = Av @ Mvv @ Av.T
    keep = kept_directions(G, vx, vy)
    rho = (np.einsum("ij,ij->i", Ax @ Mxy, Ay) / np.sqrt(vx * vy))[keep]
    R = np.linalg.cholesky(G[np.ix_(keep, keep)]).T  # G = R^T R on the kept directions
    B = np.linalg.solve(R.T, (Av @ Mvv)[keep])
    alpha = np.abs(B).sum(1)
    return (alpha * rho).sum() / alpha.sum(), rho.mean(), rho[0]


def score_rows(fit_, Z):
    """The row path: centred canonical variates and activations, QR of the weighting view's variates."""
    p, ix, iy = fit_["p"], fit_["ix"], fit_["iy"] + fit_["p"]
    Zc = Z - Z.mean(0)
    Hx, Hy = Zc[:, ix] @ fit_["Ax"].T, Zc[:, iy] @ fit_["Ay"].T
    rho = (Hx * Hy).sum(0) / np.sqrt((Hx * Hx).sum(0) * (Hy * Hy).sum(0))
    Hv, Av = (Hx, Zc[:, ix]) if fit_["wx"] else (Hy, Zc[:, iy])
    keep = kept_directions(Hv.T @ Hv, (Hx * Hx).sum(0), (Hy * Hy).sum(0))
    Q, _ = np.linalg.qr(Hv[:, keep])
    alpha = np.abs(Q.T @ Av).sum(1)
    return (alpha * rho[keep]).sum() / alpha.sum()


def protocol(Z, fold, p, check_rows):
    res = []
    for t in range(T):
        dev, test = fold == 2 * t, fold == 2 * t + 1
        tr = ~dev & ~test
        Mtr, Mdev, Mtest = comoment(Z[tr]), comoment(Z[dev]), comoment(Z[test])
        q = Z.shape[1] - p
        fits = [fit(Mtr, tr.sum(), p, q, ex, ey) for ex in EPS for ey in EPS]
        devs = [score(f_, Mdev)[0] for f_ in fits]
        best = next(i for i, d in enumerate(devs) if d >= max(devs) - 1e-12)
        res.append(score(fits[best], Mtest) + (fits[best]["k"],))
        if check_rows and t == 0:
            d = abs(score_rows(fits[best], Z[test]) - res[-1][0])
            assert d < 1e-10, f"moment path vs row path: {d}"
    r = np.array(res)
    return r[:, 0].mean(), r[:, 1].mean(), r[:, 2].mean(), int(r[0, 3])


def views(prop, layer):
    """(Z, folds, p) of a property at a layer."""
    fold_f = np.array([f[3] for f in frames])
    if prop in ("mel", "intra", "inter"):
        y = (mel_rows() if prop == "mel" else frame_rows(layer, hid2, hid2_at) if prop == "inter"
             else frame_rows(js["properties"]["intra"]["base"]))
        return np.hstack([frame_rows(layer), y]), fold_f, None
    if prop == "phone-frame":
        lab = np.array([f[2] for f in frames])
        keep = lab >= 0
        q = js["properties"][prop]["classes"]
        return np.hstack([frame_rows(layer)[keep], onehot(lab[keep], q)]), fold_f[keep], None
    units_ = words if prop == "word" else segs
    lab = np.array([s[3] for s in units_])
    q = js["properties"][prop]["classes"]
    return np.hstack([seg_rows(layer, units_), onehot(lab, q)]), np.array([s[4] for s in units_]), None


def cka(block_rows, debiased):
    X = [b - b.mean(0) for b in block_rows]
    n = X[0].shape[0]
    r = [(x * x).sum(1) for x in X]
    out = np.zeros((len(X), len(X)))

    def h(a, b):
        v = np.linalg.norm(X[a].T @ X[b]) ** 2
        if debiased:
            v += -n / (n - 2) * r[a] @ r[b] + r[a].sum() * r[b].sum() / ((n - 1) * (n - 2))
        return v
    for a in range(len(X)):
        for b in range(len(X)):
            out[a, b] = h(a, b) / np.sqrt(h(a, a) * h(b, b))
    return out


worst = 0.0
D = hid.shape[2]
for prop in ("mel", "phone", "phone-frame", "intra", "inter", "word"):
    if prop not in js["properties"]:
        continue
    P = js["properties"][prop]
    for layer in range(L1):
        if prop == "intra" and layer == P["base"]:
            assert P["pwcca"][layer] is None
            continue
        Z, fold, _ = views(prop, layer)
        pw, mr, r1, k = protocol(Z, fold, D, check_rows=(layer == 0 or prop == "intra"))
        got = (P["pwcca"][layer], P["mean_rho"][layer], P["rho1"][layer])
        d = max(abs(got[0] - pw), abs(got[1] - mr), abs(got[2] - r1))
        worst = max(worst, d)
        print(f"{prop:12s} T{layer}: koe {got[0]:.6f} ref {pw:.6f}  mean_rho {got[1]:.6f}/{mr:.6f}  k {P['k'][layer]}/{k}"
              f"  |d| {d:.2e}")
        assert d < 1e-4, f"{prop} T{layer}: koe and the reference differ by {d}"
        assert P["k"][layer] == k, f"{prop} T{layer}: k {P['k'][layer]} vs {k}"
if js.get("cka"):
    sub = [i for i, f in enumerate(frames) if f[4]]
    blocks = [np.stack([hid[l, hid_at[frames[i][0]][0] + frames[i][1]] for i in sub]).astype(np.float64)
              for l in range(L1)]
    assert js["cka"]["frames"] == len(sub), (js["cka"]["frames"], len(sub))
    for key, deb in (("matrix", True), ("biased", False)):
        d = np.abs(np.array(js["cka"][key]) - cka(blocks, deb)).max()
        print(f"cka {key}: |d| {d:.2e}")
        assert d < 1e-6, f"cka {key}: koe and the reference differ by {d}"
if "pnmi" in js["properties"]:
    assert all(0 <= v <= 1 for v in js["properties"]["pnmi"]["pnmi"])
print(f"analyze layers reference: every score within {worst:.2e}")

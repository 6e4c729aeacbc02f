#!/usr/bin/env python3
"""PyTorch reference for the HuBERT head and loss (core/hubert.h), for tests/unit/test_hubert.c.

  /usr/bin/python3 hubert_ref.py OUT.h5

Each case builds torchaudio's LogitGenerator (torchaudio.models.wav2vec2.components, default
initialisation from a fixed seed), runs it on a padded batch x (B, T, D) with a span-like mask and
labels (-1 = no label), and takes the loss exactly as ../shared/anchors/torch_hubert_step.py does:
F.cross_entropy(logit, zeros, reduction="sum") on torchaudio's [positive, all classes with the
positive at -inf] logits. Then (scale * loss).backward(). Saved per case (one HDF5 group, float32 or
int32, flattened row-major; sizes and scale as attributes): x, mask, pad, labels, the three
parameters by name, loss, n_frames, n_correct (fairseq's compute_correct: argmax == 0 minus rows
where argmax and argmin are both 0), dx and grad.<parameter name>.

Cases: `masked` (the default objective, scale 1 as the anchor), `unmasked` (the nomask term, scale
1 / n_frames) and `clamped` (one label embedding scaled to norm ~1e-9 < eps, so torch's clamped
cosine norm and its gradient are exercised).

It also checks that torchaudio's form equals the plain cross-entropy over all classes with the true
label (the form koe implements): same loss, same gradients, same accuracy count; it exits non-zero
if not.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torchaudio.models.wav2vec2.components import LogitGenerator

torch.manual_seed(4321)
torch.set_default_dtype(torch.float32)
out = h5py.File(sys.argv[1], "w")


def put(grp, name, t, dtype=np.float32):
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    grp.create_dataset(name, data=np.ascontiguousarray(a, dtype=dtype).ravel())


def fairseq_correct(logits):
    mx = logits.argmax(-1) == 0
    mn = logits.argmin(-1) == 0
    return int(mx.long().sum() - (mx & mn).long().sum())


def plain_form(x, sel, label, gen, scale):
    """koe's form: CE over all classes with the true label; returns loss, grads, correct."""
    x = x.detach().clone().requires_grad_(True)
    w = gen.final_proj.weight.detach().clone().requires_grad_(True)
    b = gen.final_proj.bias.detach().clone().requires_grad_(True)
    e = gen.label_embeddings.detach().clone().requires_grad_(True)
    proj = F.linear(x[sel], w, b)
    logits = torch.cosine_similarity(proj[:, None, :], e[None, :, :], dim=-1) / 0.1
    y = label[sel].long()
    loss = F.cross_entropy(logits, y, reduction="sum")
    (scale * loss).backward()
    top = logits.max(-1).values
    correct = int((logits.gather(1, y[:, None])[:, 0] >= top).sum())
    return loss, [x.grad, w.grad, b.grad, e.grad], correct


def close(a, b, what):
    err = (a - b).abs().max().item()
    tol = 1e-5 * max(b.abs().max().item(), 1e-30) + 1e-7
    if not err <= tol:
        sys.exit(f"hubert_ref: torchaudio's form and the plain CE differ in {what}: {err:.3e} > {tol:.3e}")


def case(name, B, T, D, Fd, C, lens, which, tiny_class=None):
    gen = LogitGenerator(D, C, Fd, skip_masked=which != "masked", skip_nomask=which == "masked")
    if tiny_class is not None:
        with torch.no_grad():
            gen.label_embeddings[tiny_class] *= 1e-9
    x = torch.randn(B, T, D).requires_grad_(True)
    lens = torch.tensor(lens)
    pad = torch.arange(T)[None, :] >= lens[:, None]
    # spans of 5 starting with prob 0.15, on padding too: the head must ignore padded frames
    starts = torch.rand(B, T) < 0.15
    mask = torch.zeros(B, T, dtype=torch.bool)
    for k in range(5):
        mask[:, k:] |= starts[:, : T - k]
    labels = torch.randint(0, C, (B, T), dtype=torch.int32)
    labels[torch.rand(B, T) < 0.1] = -1
    has = labels >= 0
    sel_m = mask & ~pad & has
    sel_u = ~mask & ~pad & has
    logit_m, logit_u = gen(x, labels.clamp(min=0), sel_m, sel_u)
    logit, sel = (logit_m, sel_m) if which == "masked" else (logit_u, sel_u)
    n = logit.shape[0]
    scale = 1.0 if which == "masked" else 1.0 / n
    # exactly as ../shared/anchors/torch_hubert_step.py: the true class is at index 0
    loss = F.cross_entropy(logit, torch.zeros(n, dtype=torch.long), reduction="sum")
    (scale * loss).backward()
    correct = fairseq_correct(logit.detach())
    grads = [x.grad, gen.final_proj.weight.grad, gen.final_proj.bias.grad, gen.label_embeddings.grad]

    ploss, pgrads, pcorrect = plain_form(x, sel, labels, gen, scale)
    close(ploss.reshape(1), loss.detach().reshape(1), f"{name} loss")
    for what, a, b in zip(["dx", "dW", "db", "dE"], pgrads, grads):
        close(a, b, f"{name} {what}")
    if pcorrect != correct:
        sys.exit(f"hubert_ref: {name}: plain accuracy count {pcorrect} != torchaudio's {correct}")

    g = out.create_group(name)
    g.attrs.update(B=B, T=T, D=D, F=Fd, C=C, scale=scale, which=1 if which == "masked" else 2,
                   n_frames=n, n_correct=correct)
    put(g, "x", x)
    put(g, "mask", mask, np.int32)
    put(g, "pad", pad, np.int32)
    put(g, "labels", labels, np.int32)
    put(g, "final_proj.weight", gen.final_proj.weight)
    put(g, "final_proj.bias", gen.final_proj.bias)
    put(g, "label_embeddings", gen.label_embeddings)
    put(g, "loss", loss.reshape(1))
    put(g, "dx", grads[0])
    put(g, "grad.final_proj.weight", grads[1])
    put(g, "grad.final_proj.bias", grads[2])
    put(g, "grad.label_embeddings", grads[3])
    print(f"hubert_ref: {name}: {n} frames, loss {loss.item():.6f}, correct {correct}; "
          f"torchaudio's form == plain CE (loss, 4 gradients, accuracy)")


case("masked", B=3, T=60, D=48, Fd=32, C=20, lens=[60, 45, 23], which="masked")
case("unmasked", B=3, T=60, D=48, Fd=32, C=20, lens=[60, 45, 23], which="unmasked")
case("clamped", B=2, T=40, D=24, Fd=16, C=12, lens=[40, 31], which="masked", tiny_class=5)
out.close()

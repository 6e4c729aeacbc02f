#!/usr/bin/env python3
"""PyTorch reference tensors for the layer kernels (core/layers.h), for tests/unit/test_layers_parity.c.

  /usr/bin/python3 layers_ref.py OUT.h5

One HDF5 group per case. Each group holds the inputs, the parameters, a random R, the output and
the gradients of the scalar loss sum(out * R) with respect to every input and parameter, all
float32 and flattened (row-major) in koe's layouts: activations time-major (B, T, C) (the script
transposes to and from PyTorch's channels-first conv layout), weights as PyTorch stores them. The
sizes are integer attributes of the group. Datasets: x, w, b, g, v (inputs), R, out, dx, dw, db,
dg, dv (results); a case has the ones it needs.

Cases: torch.nn.functional.linear, conv1d (waveform layer 0, a strided layer, grouped "same" like the
positional conv, depthwise like the conformer), nn.LayerNorm, nn.GroupNorm(C, C), gelu (exact),
silu, glu, and weight_norm(conv, dim=2) feeding a grouped conv (torchaudio's
ConvolutionalPositionalEmbedding). Dropout has no PyTorch counterpart (its mask comes from koe's
counter-based RNG, not torch's): the case `dropout` builds the mask from layers.h's rule with a
reimplementation of core/rng.c in numpy, so the C kernel is checked against the written rule.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_default_dtype(torch.float32)
out_path = sys.argv[1]
h5 = h5py.File(out_path, "w")


def put(grp, **tensors):
    for name, t in tensors.items():
        a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        grp.create_dataset(name, data=np.ascontiguousarray(a, dtype=np.float32).ravel())


def leaf(*shape, scale=1.0, offset=0.0):
    return (torch.randn(*shape) * scale + offset).requires_grad_(True)


def backward(out):
    R = torch.randn(out.shape)
    (out * R).sum().backward()
    return R


# ---- linear -------------------------------------------------------------------------------------
N, C, OC = 37, 64, 48
x, w, b = leaf(N, C), leaf(OC, C, scale=0.1), leaf(OC)
out = F.linear(x, w, b)
R = backward(out)
g = h5.create_group("linear")
g.attrs.update(N=N, C=C, OC=OC)
put(g, x=x, w=w, b=b, R=R, out=out, dx=x.grad, dw=w.grad, db=b.grad)

# ---- conv1d: (name, B, Ti, C, OC, K, stride, pad, G, bias) ----------------------------------------
convs = [
    ("conv_waveform0", 2, 400, 1, 32, 10, 5, 0, 1, False),
    ("conv_strided", 2, 79, 32, 40, 3, 2, 0, 1, True),
    ("conv_grouped_same", 2, 60, 128, 128, 32, 1, 16, 16, True),
    ("conv_depthwise", 2, 40, 24, 24, 31, 1, 15, 24, True),
]
for name, B, Ti, C, OC, K, S, P, G, has_bias in convs:
    x = leaf(B, Ti, C)
    w = leaf(OC, C // G, K, scale=(C // G * K) ** -0.5)
    b = leaf(OC) if has_bias else None
    out = F.conv1d(x.transpose(1, 2), w, b, stride=S, padding=P, groups=G).transpose(1, 2)
    R = backward(out)
    g = h5.create_group(name)
    g.attrs.update(B=B, Ti=Ti, C=C, OC=OC, K=K, stride=S, pad=P, G=G, bias=int(has_bias))
    put(g, x=x, w=w, R=R, out=out, dx=x.grad, dw=w.grad)
    if has_bias:
        put(g, b=b, db=b.grad)

# ---- layernorm over the last dim ------------------------------------------------------------------
N, C = 37, 96
ln = torch.nn.LayerNorm(C, eps=1e-5)
with torch.no_grad():
    ln.weight.copy_(1 + 0.3 * torch.randn(C))
    ln.bias.copy_(0.3 * torch.randn(C))
x = leaf(N, C, scale=2.0, offset=0.5)
out = ln(x)
R = backward(out)
g = h5.create_group("layernorm")
g.attrs.update(N=N, C=C)
put(g, x=x, w=ln.weight, b=ln.bias, R=R, out=out, dx=x.grad, dw=ln.weight.grad, db=ln.bias.grad)

# ---- groupnorm, one group per channel, normalised over time ----------------------------------------
B, T, C = 2, 79, 32
gn = torch.nn.GroupNorm(C, C, eps=1e-5)
with torch.no_grad():
    gn.weight.copy_(1 + 0.3 * torch.randn(C))
    gn.bias.copy_(0.3 * torch.randn(C))
x = leaf(B, T, C, scale=2.0, offset=0.5)
out = gn(x.transpose(1, 2)).transpose(1, 2)
R = backward(out)
g = h5.create_group("groupnorm")
g.attrs.update(B=B, T=T, C=C)
put(g, x=x, w=gn.weight, b=gn.bias, R=R, out=out, dx=x.grad, dw=gn.weight.grad, db=gn.bias.grad)

# ---- activations ------------------------------------------------------------------------------------
for name, fn in [("gelu", lambda t: F.gelu(t)), ("swish", F.silu)]:
    n = 1000
    x = leaf(n, scale=3.0)
    out = fn(x)
    R = backward(out)
    g = h5.create_group(name)
    g.attrs.update(n=n)
    put(g, x=x, R=R, out=out, dx=x.grad)
N, C = 37, 32
x = leaf(N, 2 * C, scale=2.0)
out = F.glu(x, dim=-1)
R = backward(out)
g = h5.create_group("glu")
g.attrs.update(N=N, C=C)
put(g, x=x, R=R, out=out, dx=x.grad)

# ---- weight norm (dim=2) feeding a grouped conv, as torchaudio's ConvolutionalPositionalEmbedding ---
B, T, C, K, G = 2, 30, 64, 16, 16
conv = torch.nn.Conv1d(C, C, K, padding=K // 2, groups=G)
with torch.no_grad():
    conv.weight.normal_(0, (4.0 / (K * C)) ** 0.5)
    conv.bias.zero_()
conv = torch.nn.utils.weight_norm(conv, name="weight", dim=2)
x = leaf(B, T, C)
out = conv(x.transpose(1, 2))[:, :, :-1].transpose(1, 2)  # K even: drop the last frame
R = backward(out)
g = h5.create_group("weightnorm_conv")
g.attrs.update(B=B, T=T, C=C, K=K, G=G)
put(g, x=x, g=conv.weight_g, v=conv.weight_v, b=conv.bias, w=conv.weight, R=R, out=out, dx=x.grad,
    dg=conv.weight_g.grad, dv=conv.weight_v.grad, db=conv.bias.grad)

# ---- dropout: the mask rule of layers.h with core/rng.c in numpy ------------------------------------
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def hash64(x):
    x &= M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def stream_key(seed, a, b, purpose):
    k = hash64(seed + GOLDEN)
    k = hash64(k ^ ((a + GOLDEN) & M64))
    k = hash64(k ^ ((b + 2 * GOLDEN) & M64))
    return hash64(k ^ ((purpose + 3 * GOLDEN) & M64))


KOE_RNG_DROPOUT = 8  # position in core/rng.h's KoeRngPurpose (KOE_RNG_EPOCH_ORDER = 1)
n, p, seed, sa, sb = 3000, 0.1, 5, 17, 2
key = stream_key(seed, sa, sb, KOE_RNG_DROPOUT)
keep = np.array([(hash64(key + (i + 1) * GOLDEN) >> 40) / float(1 << 24) >= np.float32(p) for i in range(n)])
x = torch.randn(n)
out = x.numpy() * keep / (1.0 - np.float32(p))
R = torch.randn(n).numpy()
g = h5.create_group("dropout")
g.attrs.update(n=n, p=p, seed=seed, a=sa, b=sb)
put(g, x=x, R=R, out=out, dx=R * keep / (1.0 - np.float32(p)))
h5.close()
print(f"{out_path}: reference tensors written")

#!/usr/bin/env python3
"""attention_ref.py — reference tensors for tests/unit/test_attention_parity.c.

torchaudio.models.wav2vec2.components.SelfAttention with fixed random weights, on a padded batch
(the attention mask built as torchaudio's Encoder._preprocess builds it from lengths: padded frames
of x zeroed, -10000 added to padded keys), dropout off; loss = sum(out * R); backward.
Writes OUT.h5 with 1-d float32 datasets (C order): x, R, out, {q,k,v,out}_proj.{weight,bias},
grad.x, grad.{q,k,v,out}_proj.{weight,bias}; int64 lengths; attributes B, T, C, H.
Usage: attention_ref.py OUT.h5 [--B 4 --T 61 --C 768 --H 12]
"""
import argparse

import h5py
import numpy as np
import torch
from torchaudio.models.wav2vec2.components import SelfAttention


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=61)
    ap.add_argument("--C", type=int, default=768)
    ap.add_argument("--H", type=int, default=12)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    B, T, C, H = a.B, a.T, a.C, a.H
    att = SelfAttention(C, H, dropout=0.0)
    with torch.no_grad():
        for lin in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
            # std 0.05: attention scores of a few units, so the softmax is neither flat nor one-hot
            lin.weight.normal_(0.0, 0.05)
            lin.bias.normal_(0.0, 0.1)
    # first utterance full length, last one all padding (torchaudio gives it -10000 on every key)
    lengths = torch.tensor([T] + [max(T * (B - 1 - b) // B, 1) for b in range(1, B - 1)] + [0], dtype=torch.int64)
    x = torch.randn(B, T, C)
    pad = torch.arange(T).expand(B, T) >= lengths[:, None]
    x[pad] = 0.0
    mask = (-10000.0 * pad[:, None, None, :].to(x.dtype)).expand(B, 1, T, T)
    x.requires_grad_(True)
    out = att(x, mask)
    R = torch.randn(B, T, C)
    (out * R).sum().backward()

    def f32(t):
        return t.detach().contiguous().numpy().astype(np.float32).ravel()

    with h5py.File(a.out, "w") as h:
        h.attrs.update({"B": B, "T": T, "C": C, "H": H})
        h["lengths"] = lengths.numpy()
        h["x"], h["R"], h["out"], h["grad.x"] = f32(x), f32(R), f32(out), f32(x.grad)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lin = getattr(att, name)
            for p in ("weight", "bias"):
                h[f"{name}.{p}"] = f32(getattr(lin, p))
                h[f"grad.{name}.{p}"] = f32(getattr(lin, p).grad)
    print(f"{a.out}: B={B} T={T} C={C} H={H} lengths={lengths.tolist()} max|out|={out.abs().max():.3g}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference for one koe Conformer layer (core/conformer.h), for tests/unit/test_conformer.c.

  python3 conformer_ref.py OUT.h5 [--B 3 --T 48 --D 32 --F 64 --H 4 --K 31 --seed 0]

Builds the layer from torch.nn pieces (LayerNorm, Linear, SiLU, Conv1d, GLU, MultiheadAttention),
in torchaudio's ConformerLayer order, with koe's two deliberate differences: the conv module's norm
is a per-frame LayerNorm (`depthwise_layer_norm`, as transformers' Wav2Vec2Bert), and padded frames
are zeroed right before the depthwise conv. Convolutions have no bias (transformers/fairseq).
Weights are random with a fixed seed (LayerNorm scales near 1, biases near 0, so every term shows)
and are saved by their transformers names; one padded batch runs with dropout off, and the file
gets the residual stream after every block (x1..x4), the output, and the gradients of
sum(out * R) with respect to the input and every parameter. All datasets are flat float32
(lengths int64); attrs B T D F H K.
"""
import argparse

import h5py
import numpy as np
import torch
from torch import nn


class FeedForward(nn.Module):
    def __init__(self, D, F):
        super().__init__()
        self.intermediate_dense = nn.Linear(D, F)
        self.act = nn.SiLU()
        self.output_dense = nn.Linear(F, D)

    def forward(self, x):
        return self.output_dense(self.act(self.intermediate_dense(x)))


class ConvModule(nn.Module):
    def __init__(self, D, K):
        super().__init__()
        self.layer_norm = nn.LayerNorm(D)
        self.pointwise_conv1 = nn.Conv1d(D, 2 * D, 1, bias=False)
        self.glu = nn.GLU(dim=1)
        self.depthwise_conv = nn.Conv1d(D, D, K, padding=(K - 1) // 2, groups=D, bias=False)
        self.depthwise_layer_norm = nn.LayerNorm(D)
        self.act = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(D, D, 1, bias=False)

    def forward(self, x, key_pad):  # x (B, T, D), key_pad (B, T) bool
        y = self.glu(self.pointwise_conv1(self.layer_norm(x).transpose(1, 2)))
        y = y.masked_fill(key_pad[:, None, :], 0.0)
        y = self.depthwise_conv(y)
        y = self.act(self.depthwise_layer_norm(y.transpose(1, 2)).transpose(1, 2))
        return self.pointwise_conv2(y).transpose(1, 2)


class ConformerLayer(nn.Module):
    def __init__(self, D, F, H, K):
        super().__init__()
        self.ffn1_layer_norm = nn.LayerNorm(D)
        self.ffn1 = FeedForward(D, F)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.self_attn = nn.MultiheadAttention(D, H, batch_first=True)
        self.conv_module = ConvModule(D, K)
        self.ffn2_layer_norm = nn.LayerNorm(D)
        self.ffn2 = FeedForward(D, F)
        self.final_layer_norm = nn.LayerNorm(D)

    def forward(self, x, key_pad):
        x1 = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        a = self.self_attn_layer_norm(x1)
        a, _ = self.self_attn(a, a, a, key_padding_mask=key_pad, need_weights=False)
        x2 = x1 + a
        x3 = x2 + self.conv_module(x2, key_pad)
        x4 = x3 + 0.5 * self.ffn2(self.ffn2_layer_norm(x3))
        return [x1, x2, x3, x4, self.final_layer_norm(x4)]

    def hf_params(self):
        """(transformers name, tensor) pairs; MultiheadAttention's packed in_proj is split into the
        linear_q/k/v names (its rows are q | k | v)."""
        D = self.self_attn.embed_dim
        out = []
        for name, t in self.named_parameters():
            if name == "self_attn.in_proj_weight":
                out += [(f"self_attn.linear_{s}.weight", t[i * D:(i + 1) * D]) for i, s in enumerate("qkv")]
            elif name == "self_attn.in_proj_bias":
                out += [(f"self_attn.linear_{s}.bias", t[i * D:(i + 1) * D]) for i, s in enumerate("qkv")]
            else:
                out.append((name.replace("self_attn.out_proj", "self_attn.linear_out"), t))
        return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--B", type=int, default=3)
    p.add_argument("--T", type=int, default=48)
    p.add_argument("--D", type=int, default=32)
    p.add_argument("--F", type=int, default=64)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--K", type=int, default=31)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    layer = ConformerLayer(a.D, a.F, a.H, a.K).eval()
    with torch.no_grad():
        for name, t in layer.named_parameters():
            if "layer_norm.weight" in name:
                t.copy_(1 + 0.2 * torch.randn_like(t))
            elif t.dim() == 1:
                t.copy_(0.2 * torch.randn_like(t))
            else:
                t.copy_(torch.randn_like(t) / np.sqrt(t[0].numel()))
    # lengths from T down to a few frames more than half the depthwise kernel: padding on both
    # sides of the kernel's reach
    short = min(a.T, a.K // 2 + 3)
    lengths = torch.tensor([a.T - (a.T - short) * b // max(1, a.B - 1) for b in range(a.B)])
    key_pad = torch.arange(a.T)[None, :] >= lengths[:, None]
    x = torch.randn(a.B, a.T, a.D, requires_grad=True)
    R = torch.randn(a.B, a.T, a.D)
    outs = layer(x, key_pad)
    (outs[-1] * R).sum().backward()

    flat = lambda t: t.detach().reshape(-1).numpy().astype(np.float32)
    with h5py.File(a.out, "w") as h:
        for k in "BTDFHK":
            h.attrs[k] = np.int64(getattr(a, k))
        h["lengths"] = lengths.numpy().astype(np.int64)
        h["x"], h["R"] = flat(x), flat(R)
        for name, t in zip(["x1", "x2", "x3", "x4", "out"], outs):
            h[name] = flat(t)
        h["grad_input"] = flat(x.grad)
        params = dict(layer.named_parameters())
        for name, t in layer.hf_params():
            h["param/" + name] = flat(t)
        # gradients, split the same way as the parameters
        grads = ConformerLayer(a.D, a.F, a.H, a.K)
        with torch.no_grad():
            for name, g in grads.named_parameters():
                g.copy_(params[name].grad)
        for name, t in grads.hf_params():
            h["grad/" + name] = flat(t)
    print(f"{a.out}: B={a.B} T={a.T} D={a.D} F={a.F} H={a.H} K={a.K} lengths={lengths.tolist()} "
          f"max|out|={outs[-1].abs().max().item():.3g}")


if __name__ == "__main__":
    main()

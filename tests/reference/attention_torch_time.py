#!/usr/bin/env python3
"""attention_torch_time.py — PyTorch's time for the part of torchaudio's SelfAttention that
core/attention.c replaces (from the packed q/k/v to the concatenated heads: scaled q @ k^T, the
additive padding mask, max subtraction, softmax, dropout, @ v; then backward to q, k, v), on the
same sizes and padding as tests/bench/bench_attention.c. Prints fwd_ms=… bwd_ms=… (medians).
Usage: attention_torch_time.py [--B 4 --T 750 --C 768 --H 12 --p 0.1 --pad 0.25 --repeats 5 --threads 2]
"""
import argparse
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("B", 4), ("T", 750), ("C", 768), ("H", 12), ("repeats", 5), ("threads", 2)):
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--pad", type=float, default=0.25)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    B, T, C, H = a.B, a.T, a.C, a.H
    Dh = C // H
    lengths = torch.tensor([T] + [T - int(a.pad * b / (B - 1) * T) for b in range(1, B)])
    pad = torch.arange(T).expand(B, T) >= lengths[:, None]
    mask = (-10000.0 * pad[:, None, None, :].float()).expand(B, 1, T, T)
    qkv = torch.randn(B, T, 3 * C, requires_grad=True)
    dout = torch.randn(B, T, C)
    drop = torch.nn.Dropout(a.p)
    tf, tb = [], []
    for r in range(a.repeats + 1):
        t0 = time.perf_counter()
        q, k, v = qkv.split(C, dim=2)
        q = q.reshape(B, T, H, Dh).transpose(2, 1)
        k = k.reshape(B, T, H, Dh).permute(0, 2, 3, 1)
        v = v.reshape(B, T, H, Dh).transpose(2, 1)
        w = (Dh**-0.5 * q) @ k + mask
        w = w - w.max(dim=-1, keepdim=True)[0]
        w = drop(torch.nn.functional.softmax(w, dim=-1))
        out = (w @ v).transpose(2, 1).reshape(B, T, C)
        t1 = time.perf_counter()
        out.backward(dout)
        t2 = time.perf_counter()
        qkv.grad = None
        if r > 0:
            tf.append(t1 - t0)
            tb.append(t2 - t1)
    print(f"fwd_ms={statistics.median(tf) * 1e3:.1f} bwd_ms={statistics.median(tb) * 1e3:.1f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""optim_ref.py — the reference for core/optim.c (tests/e2e/optim_parity.sh).

Writes random flat parameters and 10 steps of gradients to DIR, runs koe's optimizer on them
(`test_optim --parity DIR`), and compares:
  * AdamW: torch.optim.AdamW on the same buffer cut into tensors, with a decay and a no-decay
    parameter group (koe's per-element mask) and a different lr every step; koe updates the buffer
    as two slices (two ZeRO ranks). Params after every step, and the final moments, must agree to
    1e-6 relative (|koe - torch| <= 1e-6 * (|torch| + scale), scale 1 for the N(0, 1) params and
    max|torch| for the moments), and each step's update (~lr) to 1e-4 of the largest update.
  * clipping: torch.nn.utils.clip_grad_norm_ on the same tensors, once clipping and once not:
    the returned norm and the clipped gradients, 1e-6 relative.
  * schedules: the formulas of fairseq's lr schedulers (fairseq/optim/lr_scheduler/), written out
    below, at sample steps: PolynomialDecayLRSchedule (polynomial_decay, power 1, end lr 0),
    CosineLRSchedule (cosine, min_lr 0, warmup_init_lr 0, t_mult 1, lr_shrink 0.1),
    TriStageLRSchedule (tri_stage with phase_ratio, init_lr_scale, final_lr_scale); 1e-12 relative.
Prints the worst element of each comparison; exits non-zero on any mismatch.
"""
import argparse
import math
import os
import subprocess
import sys

import numpy as np
import torch

SEGMENTS = [1000, 37, 4096, 1, 2500, 777, 64]  # tensors of the flat buffer
DECAY = [1, 0, 1, 0, 1, 0, 1]                   # weight decay group of each
STEPS = 10
BETAS, EPS, WD = (0.9, 0.98), 1e-6, 0.01


# ---- fairseq's schedules, as functions of num_updates (the value step_update(num_updates) sets) ----
def polynomial_decay(lr, warmup, total, step):
    # fairseq PolynomialDecayLRSchedule.step_update, power=1, end_learning_rate=0
    if warmup > 0 and step <= warmup:
        return step / float(warmup) * lr
    if step >= total:
        return 0.0
    pct_remaining = 1 - (step - warmup) / (total - warmup)
    return lr * pct_remaining ** 1.0


def cosine(lr, warmup, max_update, step):
    # fairseq CosineLRSchedule.step_update: warmup_init_lr = min_lr = 0, period = max_update - warmup,
    # t_mult = 1, lr_shrink = 0.1
    min_lr, warmup_init_lr, lr_shrink = 0.0, 0.0, 0.1
    period = max_update - warmup
    lr_step = (lr - warmup_init_lr) / warmup if warmup > 0 else 1
    if step < warmup:
        return warmup_init_lr + step * lr_step
    curr = step - warmup
    i = math.floor(curr / period)
    t_i, t_curr = period, curr - period * i
    shrink = lr_shrink ** i
    return min_lr * shrink + 0.5 * (lr * shrink - min_lr * shrink) * (1 + math.cos(math.pi * t_curr / t_i))


def tri_stage(lr, max_update, ratio, init_scale, final_scale, step):
    # fairseq TriStageLRSchedule: phases int(max_update * ratio), _decide_stage, step_update
    peak, init, final = lr, init_scale * lr, final_scale * lr
    warm, hold, decay = (int(max_update * r) for r in ratio)
    warmup_rate = (peak - init) / warm if warm != 0 else 0
    decay_factor = -math.log(final_scale) / decay
    if step < warm:
        return init + warmup_rate * step
    if step < warm + hold:
        return peak
    if step <= warm + hold + decay:
        return peak * math.exp(-decay_factor * (step - warm - hold))
    return final


SCHEDULES = [  # kind, lr, warmup, max_updates, phase ratios, init scale, final scale
    ("linear", 5e-4, 32000, 400000, (0.1, 0.4, 0.5), 0.01, 0.05),
    ("linear", 2e-3, 0, 1000, (0.1, 0.4, 0.5), 0.01, 0.05),
    ("cosine", 5e-4, 25000, 400000, (0.1, 0.4, 0.5), 0.01, 0.05),
    ("cosine", 1e-3, 7, 101, (0.1, 0.4, 0.5), 0.01, 0.05),
    ("tri_stage", 5e-5, 0, 80000, (0.1, 0.4, 0.5), 0.01, 0.05),
    ("tri_stage", 3e-4, 0, 997, (0.13, 0.27, 0.6), 0.02, 0.1),
]
STEPS_AT = sorted({0, 1, 2, 3, 6, 7, 8, 50, 99, 100, 101, 102, 103, 130, 299, 398, 399, 400, 401, 500, 997, 998,
                   999, 1000, 1001, 1007, 7999, 8000, 8001, 12345, 24999, 25000, 25001, 31999, 32000, 32001,
                   40000, 40001, 100000, 216000, 250000, 399999, 400000, 400001})


def ref_schedule(spec, step):
    kind, lr, warmup, max_updates, ratio, init_scale, final_scale = spec
    if kind == "linear":
        return polynomial_decay(lr, warmup, max_updates, step)
    if kind == "cosine":
        return cosine(lr, warmup, max_updates, step)
    return tri_stage(lr, max_updates, ratio, init_scale, final_scale, step)


def compare(name, ours, ref, rtol, scale=None):
    """Worst |ours - ref| / (|ref| + scale) must be <= rtol; scale defaults to 1e-3 max|ref|."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref)) * 1e-3 if scale is None else scale
    err = np.abs(ours - ref) / (np.abs(ref) + scale)
    i = int(np.argmax(err))
    ok = err[i] <= rtol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: worst element {i}: koe {ours.flat[i]:.9g} torch/fairseq "
          f"{ref.flat[i]:.9g} (relative {err[i]:.3g}, limit {rtol:g})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="build/tests/test_optim")
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(1234)
    n = sum(SEGMENTS)
    p0 = rng.standard_normal(n).astype(np.float32)
    decay = np.concatenate([np.full(s, d, np.uint8) for s, d in zip(SEGMENTS, DECAY)])
    grads = np.empty((STEPS, n), np.float32)
    for s in range(STEPS):
        g = rng.standard_normal(n) * rng.choice([1e-3, 0.1, 1.0, 30.0])
        g[1037:1037 + 4096] *= 1e-6  # tiny gradients: eps matters
        if s == 4:
            g[:1000] = 0.0           # a step without gradient for one tensor
        grads[s] = g.astype(np.float32)
    lrs = [0.0] + [5e-4 * (1 + 3 * math.sin(s)) ** 2 for s in range(1, STEPS)]  # fairseq's first lr is 0
    clip_grads = (rng.standard_normal(n) * 0.3).astype(np.float32)
    clip_norms = (3.0, 1e4)  # the first clips, the second does not
    split = 3333             # koe updates [0, split) and [split, n) as two ZeRO slices

    p0.tofile(f"{a.dir}/params0.f32")
    grads.tofile(f"{a.dir}/grads.f32")
    decay.tofile(f"{a.dir}/decay.u8")
    clip_grads.tofile(f"{a.dir}/clip_grads.f32")
    with open(f"{a.dir}/spec.txt", "w") as f:
        f.write(f"n {n}\nsteps {STEPS}\nsplit {split}\nbeta1 {BETAS[0]!r}\nbeta2 {BETAS[1]!r}\neps {EPS!r}\n"
                f"wd {WD!r}\nlr {' '.join(repr(x) for x in lrs)}\nclip {clip_norms[0]!r} {clip_norms[1]!r}\n")
        for kind, lr, warmup, mx, r, i0, f0 in SCHEDULES:
            f.write(f"schedule {kind} {lr!r} {warmup} {mx} {r[0]!r} {r[1]!r} {r[2]!r} {i0!r} {f0!r}\n")
        f.write("steps_at " + " ".join(str(s) for s in STEPS_AT) + "\n")
    subprocess.run([a.bin, "--parity", a.dir], check=True)

    ok = True
    # AdamW in torch: the flat buffer as tensors, decay and no-decay groups
    bounds = np.cumsum([0] + SEGMENTS)
    params = [torch.nn.Parameter(torch.from_numpy(p0[bounds[i]:bounds[i + 1]].copy())) for i in range(len(SEGMENTS))]
    groups = [{"params": [p for p, d in zip(params, DECAY) if d], "weight_decay": WD},
              {"params": [p for p, d in zip(params, DECAY) if not d], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1.0, betas=BETAS, eps=EPS)
    ours = np.fromfile(f"{a.dir}/koe_params.f32", np.float32).reshape(STEPS, n)
    prev = p0.astype(np.float64)
    for s in range(STEPS):
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(grads[s, bounds[i]:bounds[i + 1]].copy())
        for g in opt.param_groups:
            g["lr"] = lrs[s]
        opt.step()
        flat = torch.cat([p.detach() for p in params]).numpy()
        ok &= compare(f"AdamW params after step {s + 1} (lr {lrs[s]:.3g})", ours[s], flat, 1e-6, scale=1.0)
        # the update itself (~lr), to 1e-4 of the step's largest update, beyond the float32 rounding
        # of the two parameter values it is the difference of
        if s > 0:
            d_ref, d_ours = flat - prev, ours[s].astype(np.float64) - ours[s - 1]
            rounding = 2 * np.abs(np.spacing(flat.astype(np.float32))).astype(np.float64)
            excess = np.maximum(np.abs(d_ours - d_ref) - rounding, 0) / np.max(np.abs(d_ref))
            i = int(np.argmax(excess))
            good = excess[i] <= 1e-4
            print(f"{'ok  ' if good else 'FAIL'} AdamW update of step {s + 1}: worst element {i}: koe {d_ours[i]:.9g} "
                  f"torch {d_ref[i]:.9g} (beyond rounding: {excess[i]:.3g} of the largest update, limit 1e-4)")
            ok &= good
        prev = flat.astype(np.float64)
    m = torch.cat([opt.state[p]["exp_avg"] for p in params]).numpy()
    v = torch.cat([opt.state[p]["exp_avg_sq"] for p in params]).numpy()
    # the moments sum terms as large as the largest gradients, so they cancel: tolerance per tensor
    ok &= compare("AdamW exp_avg", np.fromfile(f"{a.dir}/koe_m.f32", np.float32), m, 1e-6, scale=np.max(np.abs(m)))
    ok &= compare("AdamW exp_avg_sq", np.fromfile(f"{a.dir}/koe_v.f32", np.float32), v, 1e-6, scale=np.max(np.abs(v)))

    # clipping
    with open(f"{a.dir}/koe_clip.txt") as f:
        koe_norms = [float(x) for x in f.read().split()]
    for c, max_norm in enumerate(clip_norms):
        ts = [torch.nn.Parameter(torch.zeros(s)) for s in SEGMENTS]
        for i, t in enumerate(ts):
            t.grad = torch.from_numpy(clip_grads[bounds[i]:bounds[i + 1]].copy())
        norm = float(torch.nn.utils.clip_grad_norm_(ts, max_norm))
        clipped = torch.cat([t.grad for t in ts]).numpy()
        ok &= compare(f"clip_grad_norm_({max_norm:g}) norm", [koe_norms[c]], [norm], 1e-6, scale=0.0)
        ok &= compare(f"clip_grad_norm_({max_norm:g}) grads", np.fromfile(f"{a.dir}/koe_clipped{c}.f32", np.float32),
                      clipped, 1e-6, scale=np.max(np.abs(clipped)) * 1e-6)
        if c == 0 and not norm > max_norm:
            print("FAIL the clipping case did not clip")
            ok = False

    # schedules
    rows = np.loadtxt(f"{a.dir}/koe_schedules.txt", ndmin=2)
    for k, spec in enumerate(SCHEDULES):
        mine = rows[rows[:, 0] == k]
        steps = [int(s) for s in mine[:, 1]]
        if steps != [s for s in STEPS_AT if s <= spec[3] + 10]:
            print(f"FAIL schedule {spec[0]}: koe wrote steps {steps}")
            ok = False
            continue
        ref = [ref_schedule(spec, s) for s in steps]
        ok &= compare(f"schedule {spec[0]} lr={spec[1]:g} warmup={spec[2]} max={spec[3]} ({len(steps)} steps)",
                      mine[:, 2], ref, 1e-12, scale=spec[1] * 1e-12)
    print("optim parity:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

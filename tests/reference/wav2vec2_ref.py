#!/usr/bin/env python3
"""PyTorch reference for wav2vec 2.0's objective head (core/wav2vec2.h), for tests/unit/test_wav2vec2.c.

  /usr/bin/python3 wav2vec2_ref.py FILE.h5

FILE.h5 is what `KOE_WAV2VEC2_DUMP=FILE.h5 test_wav2vec2` writes: per case (one HDF5 group) the batch
x (B, T, D) and features (B, T, C), the scored rows (b*T + t), the dropout_features keep pattern of
those rows, the Gumbel noise of those rows, the negatives (scored-row indices), the head's weights
by name, and as attributes the sizes, train flag, temperature, logit_temp, dropout p, and the
weights dloss and ddiv of the loss dloss * sum(CE) + ddiv * (G*V - prob_perplexity) / (G*V).
This script adds, under <case>/ref/, the loss, code and prob perplexities, diversity, the chosen
codes, dx, dfeat and grad.<parameter name>, and the attributes ref_n_correct, ref_code_ppl,
ref_prob_ppl; test_wav2vec2 with KOE_WAV2VEC2_REF=FILE.h5 compares.

The computation follows fairseq: GumbelVectorQuantizer.forward (time_first, combine_groups=False,
weight_proj_depth=1) with F.gumbel_softmax(hard=True) written out so the given noise replaces its
exponential draws; Wav2Vec2Model's quantizer path (dropout_features on the LayerNorm'd features,
quantizer on the masked rows, project_q), sample_negatives' gather (negatives come from the file),
final_proj and compute_preds; wav2vec_criterion's infonce cross_entropy(reduction="sum") and
compute-correct count, plus the prob_perplexity extra loss. Rows of all utterances are flattened to
one (N, .) batch, as fairseq's (B*T, .) views do (fairseq needs equal mask counts per utterance; koe's
masks are per utterance, so the rows are kept flat and the negatives index them directly).
One departure, deliberate: fairseq's neg_is_pos compares the projected vectors, (y == negs).all(-1);
here it compares the chosen codes (equal codes in every group <=> identical quantized vectors).
The straight-through output y_hard - y_soft.detach() + y_soft is not bit-exactly one-hot, so the
float comparison can miss equal codes; the code comparison is what the forward value means.
Computed in float64 from the float32 inputs.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

NAMES = ["quantizer.weight_proj.weight", "quantizer.weight_proj.bias", "quantizer.codevectors",
         "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias"]


def gumbel_softmax_hard(logits, noise, tau):
    """torch.nn.functional.gumbel_softmax(logits, tau, hard=True) with gumbels = noise."""
    gumbels = (logits + noise) / tau
    y_soft = gumbels.softmax(-1)
    index = y_soft.max(-1, keepdim=True)[1]
    y_hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft, index[:, 0]


def quantizer(x, wp_w, wp_b, cvars, groups, num_vars, tau, noise, training):
    """fairseq GumbelVectorQuantizer.forward on x (N, C); returns q (N, vq_dim), stats, codes (N, G)."""
    n = x.shape[0]
    x = F.linear(x, wp_w, wp_b)
    x = x.view(n * groups, -1)
    with torch.no_grad():
        _, k = x.max(-1)
        hard_x = x.new_zeros(*x.shape).scatter_(-1, k.view(-1, 1), 1.0).view(n, groups, -1)
        hard_probs = torch.mean(hard_x, dim=0)
        code_ppl = torch.exp(-torch.sum(hard_probs * torch.log(hard_probs + 1e-7), dim=-1)).sum()
    avg_probs = torch.softmax(x.view(n, groups, -1), dim=-1).mean(dim=0)
    prob_ppl = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-7), dim=-1)).sum()
    if training:
        x, codes = gumbel_softmax_hard(x, noise.view(n * groups, -1), tau)
    else:
        x, codes = hard_x, k
    x = x.view(n, -1)
    x = x.unsqueeze(-1) * cvars
    x = x.view(n, groups, num_vars, -1).sum(-2).view(n, -1)
    return x, code_ppl, prob_ppl, codes.view(n, groups)


def compute_preds(x, y, negatives, neg_is_pos, logit_temp):
    """fairseq Wav2Vec2Model.compute_preds; x, y (N, F), negatives (K, N, F) -> logits (1+K, N)."""
    y = y.unsqueeze(0)
    targets = torch.cat([y, negatives], dim=0)
    logits = torch.cosine_similarity(x, targets, dim=-1) / logit_temp
    if neg_is_pos.any():
        logits = torch.cat([logits[:1], logits[1:].masked_fill(neg_is_pos, float("-inf"))], dim=0)
    return logits


def run_case(g):
    a = {k: g.attrs[k] for k in g.attrs}
    B, T, C, D, Fd, G, V, Q, K, N = (int(a[k]) for k in "B T C D F G V Q K N".split())
    train = bool(a["train"])
    def rd(name):  # float32 in the file, float64 here
        return torch.from_numpy(g[name][:].astype(np.float64))

    x_all = rd("x").view(B * T, D).requires_grad_(True)
    feat_all = rd("feat").view(B * T, C).requires_grad_(True)
    rows = torch.from_numpy(g["rows"][:].astype(np.int64))
    keep = torch.from_numpy(g["keep"][:].astype(np.float64)).view(N, C)
    noise = rd("noise").view(N, G * V)
    neg = torch.from_numpy(g["neg"][:].astype(np.int64)).view(N, K)
    params = {n: rd(n).requires_grad_(True) for n in NAMES}
    wp_w = params[NAMES[0]].view(G * V, C)
    cvars = params[NAMES[2]].view(1, G * V, Q // G)
    pq_w = params[NAMES[3]].view(Fd, Q)
    fp_w = params[NAMES[5]].view(Fd, D)

    # Wav2Vec2Model.forward: unmasked_features = dropout_features(features); y = its masked rows
    y = feat_all[rows]
    if train:
        y = y * keep / (1.0 - float(a["dropout"]))
    q, code_ppl, prob_ppl, codes = quantizer(y, wp_w, params[NAMES[1]], cvars, G, V, float(a["tau"]), noise, train)
    y = F.linear(q, pq_w, params[NAMES[4]])
    negs = y[neg.view(-1)].view(N, K, Fd).permute(1, 0, 2)  # sample_negatives' gather, to K x N x F
    neg_is_pos = (codes[neg] == codes[:, None, :]).all(-1).t()  # (K, N)
    x = F.linear(x_all[rows], fp_w, params[NAMES[6]])
    logits = compute_preds(x, y, negs, neg_is_pos, float(a["logit_temp"]))
    # wav2vec_criterion: logits (1+K, N) -> (N, 1+K), target 0, reduction sum; extra loss prob_ppl
    logits = logits.transpose(0, 1)
    target = logits.new_zeros(N, dtype=torch.long)
    ce = F.cross_entropy(logits, target, reduction="sum")
    num_vars = G * V
    diversity = (num_vars - prob_ppl) / num_vars
    (float(a["dloss"]) * ce + float(a["ddiv"]) * diversity).backward()
    with torch.no_grad():
        mx = logits.argmax(-1) == 0
        mn = logits.argmin(-1) == 0
        correct = int(mx.long().sum() - (mx & mn).long().sum())

    if "ref" in g:
        del g["ref"]
    r = g.create_group("ref")
    f32 = lambda t: np.ascontiguousarray(t.detach().numpy(), dtype=np.float32).ravel()
    r.create_dataset("loss", data=f32(ce.reshape(1)))
    r.create_dataset("code_ppl", data=f32(code_ppl.reshape(1)))
    r.create_dataset("prob_ppl", data=f32(prob_ppl.reshape(1)))
    r.create_dataset("diversity", data=f32(diversity.reshape(1)))
    r.create_dataset("code", data=codes.numpy().astype(np.int32).ravel())
    r.create_dataset("dx", data=f32(x_all.grad))
    r.create_dataset("dfeat", data=f32(feat_all.grad))
    for n in NAMES:
        r.create_dataset("grad." + n, data=f32(params[n].grad))
    g.attrs["ref_n_correct"] = float(correct)
    g.attrs["ref_code_ppl"] = float(code_ppl)
    g.attrs["ref_prob_ppl"] = float(prob_ppl)
    n_inf = int(neg_is_pos.sum())
    print(f"wav2vec2_ref {g.name}: {N} frames, loss {float(ce):.6f}, correct {correct}, code_ppl {float(code_ppl):.4f}, "
          f"prob_ppl {float(prob_ppl):.4f}, negatives equal to the positive {n_inf}")
    return n_inf


def main():
    with h5py.File(sys.argv[1], "r+") as h:
        n_inf = {name: run_case(h[name]) for name in h}
    if n_inf.get("collide", 0) == 0:
        sys.exit("wav2vec2_ref: the 'collide' case has no negative equal to its positive; it must exercise -inf")


if __name__ == "__main__":
    main()

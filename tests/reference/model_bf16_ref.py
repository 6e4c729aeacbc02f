"""model_bf16_ref.py — PyTorch's mixed precision on the whole-model reference (tests/unit/test_model.c's
bf16 check, tests/e2e/model_parity.sh).

For the four files model_ref.py wrote (group-norm and layer-norm extractor, post-LN and pre-LN encoder),
rebuilds the same model in float32 and runs the same batch and loss sum(out * R) under
torch.autocast("cpu", dtype=torch.bfloat16): convolutions, linears and attention matmuls with bf16
operands, LayerNorm and GroupNorm in float32 (torch 1.13's CPU autocast has no bf16 LayerNorm; torch
2.x autocast runs both norms in float32, as ../shared/anchors/torch_hubert_step.py --bf16 does).
GELU's backward gets its gradient and input in the same (contiguous) layout: this torch's gelu_backward
(float32 and bf16; float64 is right) gives wrong values when they differ, as they do at the group-norm
extractor's last conv, whose gradient comes back transposed from the feature projection. Measured on
ref_group_postln.h5 against model_ref.py's float64 gradients: worst |err| / max|ref| of a float32 run
without autocast 8e26 (conv_layers.2.conv.weight) as is, 5.4e-6 with the layouts matched.
Adds to each file:
  /bf16/out (B, T, D)         the output under autocast
  /bf16/grad/<name>           d loss / d parameter under autocast
The float64 /out and /grad/* model_ref.py wrote stay the exact answer both bf16 paths are measured against.
Usage: /usr/bin/python3 model_bf16_ref.py REF_DIR
"""
import os
import sys

import h5py
import numpy as np
import torch

from model_ref import build, hf_name

CONFIGS = [("group_norm", False), ("group_norm", True), ("layer_norm", False), ("layer_norm", True)]


def fp32_forward(f):
    def run(x):
        with torch.autocast("cpu", enabled=False):
            return f(x.float())
    return run


class Gelu(torch.autograd.Function):
    """torch's GELU with its backward given operands of one layout (see the top of the file)"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return GELU(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad.contiguous(), x.contiguous())


GELU = torch.nn.functional.gelu


def main():
    ref_dir = sys.argv[1]
    torch.set_num_threads(1)
    torch.nn.functional.gelu = Gelu.apply  # torchaudio's wav2vec2 components call it by this name
    for ci, (extractor, lnf) in enumerate(CONFIGS):
        model = build(extractor, lnf, 100 + ci).float()  # model_ref.py's seeds: the same weights
        for mod in model.modules():
            if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                mod.forward = fp32_forward(mod.forward)
        path = os.path.join(ref_dir, "ref_%s_%s.h5" % (extractor.split("_")[0], "preln" if lnf else "postln"))
        with h5py.File(path, "r+") as f:
            for k, p in model.named_parameters():  # the weights are the file's, bit for bit
                assert np.array_equal(p.detach().numpy(), f["model/" + hf_name(k)][...]), k
            wav = torch.from_numpy(f["input/wav"][...])
            lengths = torch.from_numpy(f["input/len"][...].astype(np.int64))
            R = torch.from_numpy(f["R"][...])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = model(wav, lengths)
            model.zero_grad()
            (out.float() * R).sum().backward()
            if "bf16" in f:
                del f["bf16"]
            f.create_dataset("bf16/out", data=out.detach().float().numpy())
            for k, p in model.named_parameters():
                f.create_dataset("bf16/grad/" + hf_name(k), data=p.grad.numpy().astype(np.float32))
        print("added autocast bf16 out and gradients to", path)


if __name__ == "__main__":
    main()

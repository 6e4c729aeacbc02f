"""model_ref.py — reference tensors for the whole-model parity test (tests/unit/test_model.c).

For the four combinations of extractor (group_norm / layer_norm) and encoder (post-LN / pre-LN) it
builds torchaudio.models.wav2vec2_model(...) with a small config, gives every parameter random values
(norm weights and biases too, so that a swapped weight and bias cannot pass), runs one padded batch of
three utterances (eval: dropout and layerdrop off) in float64 and writes (as float32) OUT_DIR/ref_<extractor>_<ln>.h5:
  /model/<Hugging Face name>   the weights, as a koe-checkpoint (format, format_version, /config)
  /input/wav (B, S), /input/len (B)
  /hidden/i (B, T, D)          i = 0: encoder input after the positional embedding (and, post-LN, its
                               LayerNorm); i >= 1: output of layer i (torchaudio extract_features[i-1])
  /out (B, T, D)               the model's output
  /R (B, T, D)                 fixed weights of the loss sum(out * R)
  /grad/<Hugging Face name>    d loss / d parameter
  attrs: the config (n_conv, D, L, H, F, pos_conv_kernel, pos_conv_groups, layer_norm_first, ...)
The reference runs in float64: it is the exact answer our float32 must approach, and this Debian
torch's float32 gelu_backward is wrong when its gradient and input have different layouts, as at the
group-norm extractor's last conv (a float32 run's conv_layers.2.conv.weight gradient off by 8e26 x
max|grad|, checked against float64; model_bf16_ref.py shows the cause), so a float32 reference would not
be a reference. (An earlier note here blamed GroupNorm's backward: it matches float64 to 1e-7.)
Names map as torchaudio's import_huggingface_model does: feature_extractor.* unchanged,
encoder.feature_projection.* -> feature_projection.*, encoder.transformer.* -> encoder.*.
Usage: /usr/bin/python3 model_ref.py OUT_DIR
"""
import os
import sys

import h5py
import numpy as np
import torch
from torchaudio.models import wav2vec2_model

from ckpt_checksum import model_checksum

CONV = [(32, 10, 5), (32, 3, 2), (32, 2, 2)]
D, L, H, F, K, G = 64, 2, 4, 128, 16, 4
LENGTHS = [4000, 3100, 2210]


def hf_name(name):
    if name.startswith("encoder.feature_projection."):
        return name[len("encoder."):]
    if name.startswith("encoder.transformer."):
        return "encoder." + name[len("encoder.transformer."):]
    return name


def build(extractor, layer_norm_first, seed):
    torch.manual_seed(seed)
    model = wav2vec2_model(
        extractor_mode=extractor, extractor_conv_layer_config=CONV, extractor_conv_bias=extractor == "layer_norm",
        encoder_embed_dim=D, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=K, encoder_pos_conv_groups=G,
        encoder_num_layers=L, encoder_num_heads=H, encoder_attention_dropout=0.0, encoder_ff_interm_features=F,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=layer_norm_first,
        encoder_layer_drop=0.0, aux_num_out=None)
    model.eval()
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.endswith("weight_g"):
                base = 1.0 if (name.endswith("weight") or name.endswith("weight_g")) else 0.0
                scale = p.abs().mean().item() if name.endswith("weight_g") else 1.0
                p.copy_(base * (p if name.endswith("weight_g") else 1.0) + 0.2 * scale * torch.randn_like(p))
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(5.0)  # sharper attention: q/k gradients well above float noise
    return model


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for ci, (extractor, lnf) in enumerate([("group_norm", False), ("group_norm", True),
                                           ("layer_norm", False), ("layer_norm", True)]):
        model = build(extractor, lnf, 100 + ci)
        B, S = len(LENGTHS), max(LENGTHS)
        g = torch.Generator().manual_seed(7 + ci)
        wav = torch.zeros(B, S, dtype=torch.float64)
        for b, n in enumerate(LENGTHS):
            wav[b, :n] = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        wav = wav.float().double()  # the float32 input the C side reads
        lengths = torch.tensor(LENGTHS)
        hidden = []
        hooks = []
        # hidden[0]: the first layer's input; hidden[i]: layer i's output
        layers = model.encoder.transformer.layers
        hooks.append(layers[0].register_forward_pre_hook(lambda m, inp: hidden.append(inp[0].detach().clone())))
        for layer in layers:
            hooks.append(layer.register_forward_hook(lambda m, inp, out: hidden.append(out.detach().clone())))
        out, out_len = model(wav, lengths)
        for h in hooks:
            h.remove()
        # extract_features gives the same per-layer outputs: check the hooks saw what it sees
        feats, _ = model.extract_features(wav, lengths)
        for i, f in enumerate(feats):
            assert torch.equal(f, hidden[i + 1]), "hook and extract_features disagree"
        R = torch.randn(out.shape, generator=g, dtype=torch.float64).float().double()
        model.zero_grad()
        (out * R).sum().backward()
        name = "ref_%s_%s.h5" % (extractor.split("_")[0], "preln" if lnf else "postln")
        with h5py.File(os.path.join(out_dir, name), "w") as f:
            f.attrs["format"] = "koe-checkpoint"
            f.attrs["format_version"] = np.int64(1)
            f.create_dataset("config", data=np.array([""], dtype=h5py.string_dtype()))
            for k, p in model.named_parameters():
                f.create_dataset("model/" + hf_name(k), data=p.detach().numpy().astype(np.float32))
                f.create_dataset("grad/" + hf_name(k), data=p.grad.numpy().astype(np.float32))
            rng = np.random.default_rng(ci)
            f.create_dataset("model/masked_spec_embed", data=rng.uniform(size=D).astype(np.float32))
            f["model"].attrs["checksum"] = model_checksum(f["model"])  # koe refuses a /model without one
            f.create_dataset("input/wav", data=wav.numpy().astype(np.float32))
            f.create_dataset("input/len", data=np.array(LENGTHS, dtype=np.float32))
            for i, h in enumerate(hidden):
                f.create_dataset("hidden/%d" % i, data=h.numpy().astype(np.float32))
            f.create_dataset("out", data=out.detach().numpy().astype(np.float32))
            f.create_dataset("R", data=R.numpy().astype(np.float32))
            f.create_dataset("conv_layers", data=np.array(CONV, dtype=np.float32))
            for k, v in dict(n_conv=len(CONV), layer_norm_extractor=int(extractor == "layer_norm"),
                             conv_bias=int(extractor == "layer_norm"), D=D, L=L, H=H, F=F, pos_conv_kernel=K,
                             pos_conv_groups=G, layer_norm_first=int(lnf), B=B, S=S).items():
                f.attrs[k] = np.int64(v)
        print("wrote", name, "T =", out.shape[1], "frames", out_len.tolist())


if __name__ == "__main__":
    main()

"""tests/reference/hf_export.py — read a `koe export` directory (config.json + model.safetensors, the
safetensors file parsed by hand: 8-byte header length, JSON header, raw little-endian float32) and
build torchaudio's wav2vec2_model from its config, as torchaudio's import_huggingface_model does, and
compare `koe embed --layer all` with its hidden states. Used by tests/e2e/export_torchaudio.sh,
tests/e2e/embed_fbank.sh and tests/reference/hf_standin.py."""
import json, struct

import numpy as np, torch
from torchaudio.models import wav2vec2_model


def load(exp):
    """config dict and {Hugging Face name: float32 tensor}"""
    cfg = json.load(open(exp + "/config.json"))
    with open(exp + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__")
    # one export's pair: the same koe_export_id in both files (an interrupted export leaves them different)
    assert meta == {"format": "pt", "koe_export_id": cfg["koe_export_id"]}, (meta, cfg.get("koe_export_id"))
    sd = {}
    for k, v in header.items():
        assert v["dtype"] == "F32", k
        a, b = v["data_offsets"]
        sd[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]).copy())
    return cfg, sd


def model(cfg):
    """torchaudio's wav2vec2_model with the export's hyper-parameters (weights not loaded)"""
    return wav2vec2_model(
        extractor_mode=cfg["feat_extract_norm"] + "_norm",
        extractor_conv_layer_config=list(zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])),
        extractor_conv_bias=cfg["conv_bias"], encoder_embed_dim=cfg["hidden_size"],
        encoder_projection_dropout=cfg["feat_proj_dropout"], encoder_pos_conv_kernel=cfg["num_conv_pos_embeddings"],
        encoder_pos_conv_groups=cfg["num_conv_pos_embedding_groups"], encoder_num_layers=cfg["num_hidden_layers"],
        encoder_num_heads=cfg["num_attention_heads"], encoder_attention_dropout=cfg["attention_dropout"],
        encoder_ff_interm_features=cfg["intermediate_size"], encoder_ff_interm_dropout=cfg["activation_dropout"],
        encoder_dropout=cfg["hidden_dropout"], encoder_layer_norm_first=cfg["do_stable_layer_norm"],
        encoder_layer_drop=cfg["layerdrop"], aux_num_out=None)


def load_weights(model, sd):
    """sd's tensors into model through the sub-dicts import_huggingface_model uses (all must fit)"""
    model.feature_extractor.load_state_dict(sub(sd, "feature_extractor."), strict=True)
    model.encoder.feature_projection.load_state_dict(sub(sd, "feature_projection."), strict=True)
    model.encoder.transformer.load_state_dict(sub(sd, "encoder."), strict=True)


def sub(sd, prefix):
    """the entries of sd under prefix, prefix removed (import_huggingface_model's sub-dicts)"""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def compare_layers(model, feats, offset, wavs, normalize=False):
    """koe embed --layer all's feats (L+1, frames, D) with offset against model's hidden states (float64)
    on each 16-bit WAV of wavs (normalize: (x - mean) / sqrt(var + 1e-7), transformers' do_normalize):
    exits naming the worst element when a layer differs by more than 1e-4 * max|ref| + 1e-5; returns
    the worst |err| / max|ref| of each layer"""
    import soundfile, sys
    L = feats.shape[0] - 1
    worst = np.zeros(L + 1)
    for i, w in enumerate(wavs):
        pcm, sr = soundfile.read(w, dtype="int16")
        x = pcm.astype(np.float64) / 32768.0
        if normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        hidden = []
        hk = model.encoder.transformer.layers[0].register_forward_pre_hook(lambda m, inp: hidden.append(inp[0]))
        with torch.no_grad():
            outs, _ = model.extract_features(torch.from_numpy(x)[None])
        hk.remove()
        hidden += outs
        for l in range(L + 1):
            ref = hidden[l][0].numpy()
            got = feats[l, offset[i]:offset[i + 1]]
            assert got.shape == ref.shape, (l, got.shape, ref.shape)
            err = np.abs(got - ref)
            tol = 1e-4 * np.abs(ref).max() + 1e-5
            j = np.unravel_index(err.argmax(), err.shape)
            worst[l] = max(worst[l], err.max() / np.abs(ref).max())
            if err.max() > tol:
                sys.exit(f"{w} layer {l}: worst element {j}: koe {got[j]:.8g} torchaudio {ref[j]:.8g} (|err| {err.max():.3g} > {tol:.3g})")
    return worst

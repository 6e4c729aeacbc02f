"""tests/reference/hf_export.py — read a `koe export` directory (config.json + model.safetensors, the
safetensors file parsed by hand: 8-byte header length, JSON header, raw little-endian float32) and
build torchaudio's wav2vec2_model from its config, as torchaudio's import_huggingface_model does.
Used by tests/e2e/export_torchaudio.sh and tests/e2e/embed_fbank.sh."""
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
    assert header.pop("__metadata__") == {"format": "pt"}
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


def sub(sd, prefix):
    """the entries of sd under prefix, prefix removed (import_huggingface_model's sub-dicts)"""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

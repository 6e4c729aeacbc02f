"""tests/reference/hf_standin.py — stand-ins of published Hugging Face speech encoders, written by the
test (random weights, nothing downloaded) with the tensor names, shapes, dtypes, file layouts and
config.json fields that transformers' save_pretrained gives, at tiny sizes (2 layers x 32 wide):

  hubert        HubertModel (group norm, post-LN), weight norm as weight_g / weight_v
  hubert_ctc    HubertForCTC: "hubert." prefix, lm_head, weight norm as parametrizations.weight.original0/1
  w2v2_pt       Wav2Vec2ForPreTraining: "wav2vec2." prefix, quantizer, project_hid, project_q
  hubert_large  HuBERT Large style: layer norm in every conv layer, conv bias, pre-LN, do_normalize true
                (in preprocessor_config.json, or in config.json when sharded)
  wavlm, data2vec_audio, distilhubert   models koe cannot compute (refused)
  bin_only      a directory with config.json and pytorch_model.bin only
  fairseq_pt    a fairseq HuBERT Base checkpoint file (x.pt: {"cfg": omegaconf DictConfig, "model":
                fairseq's names, label_embs_concat, final_proj}); the DictConfig classes are
                stand-ins pickled under omegaconf's module names, with omegaconf's state layout
  fairseq_pt_large   the same for a Large model (layer_norm extractor, pre-LN, conv bias), in the
                older {"args": argparse.Namespace} form with task normalize = True
  fairseq_pt_w2v2    a fairseq wav2vec 2.0 Base checkpoint: quantizer.vars, quantizer.weight_proj,
                project_q, final_proj; in torch.save's legacy (pre-1.6, non-zip) format, as the 2020 ones
The pickles get NAME.ref/ beside them: the same weights in the HF layout (F32), what `check` compares with.

Usage: hf_standin.py build ROOT            every stand-in of STANDINS as ROOT/NAME
       hf_standin.py check ROOT WAVS NAME...  ROOT/NAME.emb.h5 (koe embed --layer all of the
                                              comma-separated WAVS) against torchaudio's model on
                                              ROOT/NAME's weights (read by this file's own safetensors
                                              reader), every layer within 1e-4 * max|ref| + 1e-5;
                                              do_normalize normalises the waveform as
                                              Wav2Vec2FeatureExtractor does.
The weights come from torchaudio's wav2vec2_model with the stand-in's config (its initialisation),
every norm's weight and bias perturbed, rounded to the dtype before the reference sees them."""
import json, os, struct, sys

import numpy as np, torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_export

D, L, H, F, CONV = 32, 2, 4, 64, [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)]


# name: (kind, dtype, shards)
STANDINS = {
    "hubert": ("hubert", "F32", 1), "hubert_f16": ("hubert", "F16", 1), "hubert_bf16": ("hubert", "BF16", 1),
    "hubert_sharded": ("hubert", "F32", 3), "hubert_ctc": ("hubert_ctc", "F16", 1), "w2v2_pt": ("w2v2_pt", "BF16", 2),
    "large": ("hubert_large", "F32", 1), "large_bf16_sharded": ("hubert_large", "BF16", 2),
    "wavlm": ("wavlm", "F32", 1), "data2vec": ("data2vec_audio", "F32", 1), "distil": ("distilhubert", "F32", 1),
    "bin_only": ("bin_only", "F32", 1), "fairseq.pt": ("fairseq_pt", "F32", 1),
    "fairseq_large.pt": ("fairseq_pt_large", "F32", 1), "fairseq_w2v2.pt": ("fairseq_pt_w2v2", "F32", 1),
}


def config(kind):
    large = kind in ("hubert_large", "fairseq_pt_large")
    cfg = {
        "architectures": [{"hubert": "HubertModel", "hubert_ctc": "HubertForCTC", "w2v2_pt": "Wav2Vec2ForPreTraining",
                           "wavlm": "WavLMModel", "data2vec_audio": "Data2VecAudioModel"}.get(kind, "HubertModel")],
        "model_type": {"w2v2_pt": "wav2vec2", "wavlm": "wavlm", "data2vec_audio": "data2vec-audio"}.get(kind, "hubert"),
        "activation_dropout": 0.1, "apply_spec_augment": True, "attention_dropout": 0.1, "bos_token_id": 1,
        "conv_bias": large, "conv_dim": [c[0] for c in CONV], "conv_kernel": [c[1] for c in CONV],
        "conv_stride": [c[2] for c in CONV], "ctc_loss_reduction": "sum", "ctc_zero_infinity": False,
        "do_stable_layer_norm": large, "eos_token_id": 2, "feat_extract_activation": "gelu",
        "feat_extract_norm": "layer" if large else "group", "feat_proj_dropout": 0.1, "feat_proj_layer_norm": True,
        "final_dropout": 0.1, "hidden_act": "gelu", "hidden_dropout": 0.1, "hidden_size": D, "initializer_range": 0.02,
        "intermediate_size": F, "layer_norm_eps": 1e-5, "layerdrop": 0.1, "mask_feature_length": 10,
        "mask_feature_prob": 0.0, "mask_time_length": 10, "mask_time_prob": 0.05, "num_attention_heads": H,
        "num_conv_pos_embedding_groups": 4, "num_conv_pos_embeddings": 16, "num_feat_extract_layers": len(CONV),
        "num_hidden_layers": L, "pad_token_id": 0, "torch_dtype": "float32", "transformers_version": "4.40.0",
        "use_weighted_layer_sum": False, "vocab_size": 32,
    }
    if kind == "w2v2_pt":
        cfg.update(num_codevectors_per_group=8, num_codevector_groups=2, codevector_dim=16, proj_codevector_dim=16,
                   contrastive_logits_temperature=0.1, num_negatives=100, diversity_loss_weight=0.1)
    if kind == "distilhubert":
        cfg.update(feat_proj_layer_norm=False, num_hidden_layers=2)
    if kind == "wavlm":
        cfg.update(num_buckets=320, max_bucket_distance=800)
    return cfg


def encoder_weights(cfg, seed):
    """{HF encoder name: float32 tensor} from torchaudio's initialisation, norms perturbed"""
    torch.manual_seed(seed)
    m = hf_export.model(cfg)
    sd = {}
    for k, v in m.state_dict().items():
        k = k.replace("encoder.feature_projection.", "feature_projection.").replace("encoder.transformer.", "encoder.")
        if "norm" in k:
            v = v + 0.1 * torch.randn_like(v)
        sd[k] = v.float().clone()
    sd["masked_spec_embed"] = torch.rand(D)
    return sd


def heads(kind, cfg):
    if kind == "hubert_ctc":
        return {"lm_head.weight": 0.02 * torch.randn(cfg["vocab_size"], D), "lm_head.bias": torch.zeros(cfg["vocab_size"])}
    if kind == "w2v2_pt":
        gv = cfg["num_codevectors_per_group"] * cfg["num_codevector_groups"]
        cd, pd = cfg["codevector_dim"], cfg["proj_codevector_dim"]
        return {"quantizer.codevectors": torch.rand(1, gv, cd // cfg["num_codevector_groups"]),
                "quantizer.weight_proj.weight": 0.02 * torch.randn(gv, CONV[-1][0]),
                "quantizer.weight_proj.bias": torch.ones(gv), "project_hid.weight": 0.02 * torch.randn(pd, D),
                "project_hid.bias": torch.zeros(pd), "project_q.weight": 0.02 * torch.randn(pd, cd),
                "project_q.bias": torch.zeros(pd)}
    if kind == "wavlm":
        hd = D // H
        out = {"encoder.layers.0.attention.rel_attn_embed.weight": torch.randn(cfg["num_buckets"], H)}
        for l in range(L):
            out[f"encoder.layers.{l}.attention.gru_rel_pos_const"] = torch.ones(1, H, 1, 1)
            out[f"encoder.layers.{l}.attention.gru_rel_pos_linear.weight"] = torch.randn(8, hd)
            out[f"encoder.layers.{l}.attention.gru_rel_pos_linear.bias"] = torch.zeros(8)
        return out
    return {}


def hf_names(kind, sd):
    """transformers' names: task-model prefix, parametrized weight norm in HubertForCTC"""
    prefix = {"hubert_ctc": "hubert.", "w2v2_pt": "wav2vec2."}.get(kind, "")
    out = {}
    for k, v in sd.items():
        if kind == "hubert_ctc":
            k = k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
            k = k.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        if kind == "distilhubert" and k.startswith("feature_projection.layer_norm"):
            continue
        out[prefix + k] = v
    return out


FAIRSEQ = [  # transformers' name -> fairseq's, written independently of data/pickle_to_hf.py's table
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", None),  # group norm .2, layer norm .1.1
    (r"^feature_projection\.layer_norm\.", "layer_norm."), (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^masked_spec_embed$", "mask_emb"), (r"^encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"\.attention\.", ".self_attn."), (r"(layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
    (r"\.feed_forward\.intermediate_dense\.", ".fc1."), (r"\.feed_forward\.output_dense\.", ".fc2."),
]


def fairseq_names(sd, layer_norm):
    import re
    out = {}
    for k, v in sd.items():
        for pat, rep in FAIRSEQ:
            if rep is None:
                k = re.sub(pat, r"feature_extractor.conv_layers.\1.1.1." if layer_norm else r"feature_extractor.conv_layers.\1.2.", k)
            else:
                k = re.sub(pat, rep, k)
        out[k] = v
    return out


def omegaconf_standin(d):
    """d as omegaconf pickles a DictConfig (state {"_content": {key: node}}, nodes {"_val": value}),
    from classes registered under omegaconf's module names, so that the pickle names them"""
    import types
    if "omegaconf" not in sys.modules:
        for name in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes"):
            sys.modules[name] = types.ModuleType(name)
        class DictConfig:
            def __init__(self, content): self.content = content
            def __getstate__(self): return {"_metadata": None, "_parent": None, "_content": self.content}
        class AnyNode:
            def __init__(self, v): self.v = v
            def __getstate__(self): return {"_metadata": None, "_parent": None, "_val": self.v}
        DictConfig.__module__, AnyNode.__module__ = "omegaconf.dictconfig", "omegaconf.nodes"
        DictConfig.__qualname__, AnyNode.__qualname__ = "DictConfig", "AnyNode"
        sys.modules["omegaconf.dictconfig"].DictConfig, sys.modules["omegaconf.nodes"].AnyNode = DictConfig, AnyNode
    DictConfig, AnyNode = sys.modules["omegaconf.dictconfig"].DictConfig, sys.modules["omegaconf.nodes"].AnyNode
    return DictConfig({k: omegaconf_standin(v) if isinstance(v, dict) else AnyNode(v) for k, v in d.items()})


def fairseq_checkpoint(out, kind, cfg, tensors):
    large = kind == "fairseq_pt_large"
    model = fairseq_names(tensors, large)
    if kind == "fairseq_pt_w2v2":
        model.update({"quantizer.vars": torch.rand(1, 16, 8), "quantizer.weight_proj.weight": torch.randn(16, CONV[-1][0]),
                      "quantizer.weight_proj.bias": torch.ones(16), "project_q.weight": torch.randn(16, 16),
                      "project_q.bias": torch.zeros(16)})
    else:
        model["label_embs_concat"] = torch.randn(100, 16)
    model["final_proj.weight"], model["final_proj.bias"] = torch.randn(16, D), torch.zeros(16)
    mcfg = {"_name": "wav2vec2" if kind == "fairseq_pt_w2v2" else "hubert", "extractor_mode": "layer_norm" if large else "default", "encoder_layers": L,
            "encoder_embed_dim": D, "encoder_ffn_embed_dim": F, "encoder_attention_heads": H, "activation_fn": "gelu",
            "layer_norm_first": large, "conv_feature_layers": "[(32,10,5)] + [(32,3,2)]*2 + [(32,2,2)]",
            "conv_bias": large, "conv_pos": cfg["num_conv_pos_embeddings"], "conv_pos_groups": cfg["num_conv_pos_embedding_groups"],
            "feature_grad_mult": 0.1, "mask_prob": 0.8, "dropout": 0.1}
    if kind == "fairseq_pt_w2v2":  # the quantizer's shape (fairseq: latent_dim 0 = final_dim)
        mcfg.update(latent_groups=2, latent_vars=8, latent_dim=0, final_dim=16)
    task = {"_name": "hubert_pretraining", "normalize": large, "sample_rate": 16000}
    if large:
        import argparse
        ckpt = {"args": argparse.Namespace(arch="hubert", **{**mcfg, **task}), "model": model}
    else:
        ckpt = {"cfg": omegaconf_standin({"model": mcfg, "task": task}), "model": model}
    ckpt["extra_state"] = {"epoch": 3, "best_loss": np.float64(1.5)}
    # fairseq's wav2vec 2.0 checkpoints (2020) predate torch 1.6's zip format
    torch.save(ckpt, out, _use_new_zipfile_serialization=kind != "fairseq_pt_w2v2")


def to_bytes(t, dtype):
    t = t.contiguous()
    if dtype == "F32":
        return t.float().numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.half().numpy().astype("<f2").tobytes()
    return t.bfloat16().view(torch.int16).numpy().astype("<i2").tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in tensors.items():
        b = to_bytes(v, dtype)
        header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def build(out, kind, dtype="F32", shards=1):
    cfg = config(kind)
    if dtype != "F32":
        cfg["torch_dtype"] = {"F16": "float16", "BF16": "bfloat16"}[dtype]
    tensors = hf_names(kind, encoder_weights(cfg, 1234))
    tensors.update(heads(kind, cfg))
    if kind in ("bin_only", "fairseq_pt", "fairseq_pt_large", "fairseq_pt_w2v2"):  # pickles: the reference beside them
        os.makedirs(out + ".ref", exist_ok=True)
        json.dump({**cfg, "do_normalize": kind == "fairseq_pt_large"}, open(out + ".ref/config.json", "w"), indent=2)
        write_safetensors(out + ".ref/model.safetensors", tensors, "F32")
    if kind.startswith("fairseq_pt"):
        fairseq_checkpoint(out, kind, cfg, tensors)
        return
    os.makedirs(out, exist_ok=True)
    large = kind == "hubert_large"
    if large and shards > 1:  # some published configs say do_normalize in config.json
        cfg["do_normalize"] = True
    elif large:  # most, like hubert-large-ll60k, only in the feature extractor's preprocessor_config.json
        json.dump({"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                   "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 16000},
                  open(out + "/preprocessor_config.json", "w"), indent=2)
    json.dump(cfg, open(out + "/config.json", "w"), indent=2)
    if kind == "bin_only":
        torch.save(tensors, out + "/pytorch_model.bin")
        return
    if shards == 1:
        write_safetensors(out + "/model.safetensors", tensors, dtype)
        return
    names, weight_map = list(tensors), {}
    for s in range(shards):
        part = names[s::shards]
        file = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        write_safetensors(out + "/" + file, {k: tensors[k] for k in part}, dtype)
        weight_map.update({k: file for k in part})
    total = sum(len(to_bytes(v, dtype)) for v in tensors.values())
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, open(out + "/model.safetensors.index.json", "w"), indent=2)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    sd = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        raw = data[a:b]
        if v["dtype"] == "BF16":
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, {"F32": "<f4", "F16": "<f2"}[v["dtype"]]).astype(np.float32)
        sd[k] = torch.from_numpy(x.reshape(v["shape"]).copy())
    return sd


def load(d):
    """config and the encoder's tensors as float32 under torchaudio's sub-dict names"""
    cfg = json.load(open(d + "/config.json"))
    if os.path.exists(d + "/preprocessor_config.json"):
        cfg["do_normalize"] = json.load(open(d + "/preprocessor_config.json"))["do_normalize"]
    if os.path.exists(d + "/model.safetensors.index.json"):
        files = sorted(set(json.load(open(d + "/model.safetensors.index.json"))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(read_safetensors(d + "/" + f))
    out = {}
    for k, v in sd.items():
        for p in ("hubert.", "wav2vec2."):
            k = k[len(p):] if k.startswith(p) else k
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return cfg, out


def check(d, emb, wavs):
    import h5py
    cfg, sd = load(d + ".ref" if os.path.exists(d + ".ref") else d)
    model = hf_export.model(cfg)
    hf_export.load_weights(model, sd)
    model.eval().double()
    with h5py.File(emb, "r") as h:
        feats, offset = h["feats"][:], h["offset"][:]
    assert feats.shape[0] == L + 1, feats.shape
    worst = hf_export.compare_layers(model, feats, offset, wavs, normalize=cfg.get("do_normalize", False))
    print(d, "layers 0..%d equal torchaudio; worst |err|/max|ref|:" % L, " ".join("%.1e" % v for v in worst))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        for name, (kind, dtype, shards) in STANDINS.items():
            build(sys.argv[2] + "/" + name, kind, dtype, shards)
    else:
        root, wavs = sys.argv[2], sys.argv[3].split(",")
        for name in sys.argv[4:]:
            check(root + "/" + name, root + "/" + name + ".emb.h5", wavs)

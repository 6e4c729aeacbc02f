#!/usr/bin/env python3
"""data/pickle_to_hf.py IN OUT — converts a PyTorch pickle of a HuBERT or wav2vec 2.0 model to the
Hugging Face layout that `koe init --from` reads (OUT/config.json + OUT/model.safetensors, F32), so
that koe itself needs no pickle reader. `koe init --from` runs it when given

  - a directory with pytorch_model.bin (or pytorch_model.bin.index.json and its shards) and
    config.json, as transformers' save_pretrained writes without safetensors: the tensors are
    written as they are, config.json and preprocessor_config.json copied;
  - a fairseq checkpoint (x.pt: {"cfg" or "args": ..., "model": state dict}): the tensors are renamed
    to transformers' names (the HuBERT label_embs_concat / final_proj and the wav2vec 2.0 quantizer /
    project_q / final_proj heads too) and config.json is written from the model config
    (conv_feature_layers, extractor_mode, encoder_*, layer_norm_first, conv_pos*, wav2vec 2.0's
    latent_groups / latent_vars / latent_dim / final_dim as the num_codevector_* / *codevector_dim
    fields, and the task's normalize as do_normalize).

Safety: torch.save's file (zip, or the legacy format before torch 1.6) is read here, and its pickle by an Unpickler that runs no code from the
file (not torch.load, which runs any callable the pickle names). Only the names that rebuild
tensors (torch._utils._rebuild_tensor_v2 and the storage types, mapped to this file's own
functions) and OrderedDict are resolved; any other class (fairseq's, omegaconf's DictConfig,
argparse.Namespace, numpy scalars, os.system) becomes an inert stub that only records its
arguments and state, so neither fairseq nor omegaconf is needed and nothing in the file is
executed. Needs python3 and torch (Debian: python3-torch) for the tensors.
Exit 1 with a message on stderr for a file that is not such a model."""
import ast, collections, io, json, os, pickle, re, shutil, struct, sys, zipfile

import torch

DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
          "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
          "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool}


class Stub:
    """an instance of a class the converter does not trust: arguments and state, no behaviour"""
    args, state = (), None

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, k, v):  # pickle's SETITEMS on a dict subclass
        if self.state is None:
            self.state = {}
        self.state[k] = v

    def append(self, v):  # APPENDS on a list subclass
        self.args = self.args + (v,)


def rebuild_tensor(storage, offset, size, stride, *unused):
    """a view of storage (a 1-d tensor): the legacy format fills the storages after the pickle"""
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def rebuild_parameter(data, *unused):
    return data


class Unpickler(pickle.Unpickler):
    """resolves only what rebuilds tensors (to this file's own functions) and OrderedDict; every
    other class becomes a Stub subclass named after it. records(key): a storage's bytes (the zip's
    data/KEY), or None for the legacy format, whose storages follow the pickle: then they are made
    empty here (self.storages) and filled by load_legacy."""

    def __init__(self, f, records=None):
        super().__init__(f)
        self.records, self.storages = records, {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return type(name, (Stub,), {"__module__": "stub." + module})

    def persistent_load(self, pid):  # ("storage", dtype, key, location, numel[, view (key, offset, size)])
        if not (isinstance(pid, tuple) and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError("unexpected persistent id %r" % (pid[:2],))
        if self.records:
            return torch.frombuffer(bytearray(self.records(str(pid[2]))), dtype=pid[1])
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = torch.empty(int(pid[4]), dtype=pid[1])
        view = pid[5] if len(pid) > 5 else None
        return self.storages[key] if view is None else self.storages[key][int(view[1]):int(view[1]) + int(view[2])]


def load_legacy(f):
    """torch.save before torch 1.6: pickles of the magic number, protocol and system info, the object,
    the storage keys, then each storage as an int64 element count and its raw bytes"""
    magic = Unpickler(f).load()
    if magic != 0x1950A86A20F9469CFC6C:
        raise ValueError("not a torch.save file (neither a zip nor the legacy format)")
    Unpickler(f).load(), Unpickler(f).load()  # protocol version, system info
    u = Unpickler(f)
    result = u.load()
    for key in Unpickler(f).load():
        st = u.storages[str(key)]
        n = struct.unpack("<q", f.read(8))[0]
        data = f.read(n * st.element_size())
        if n != st.numel() or len(data) != n * st.element_size():
            raise ValueError("storage %s: truncated or not %d elements" % (key, st.numel()))
        st.copy_(torch.frombuffer(bytearray(data), dtype=st.dtype))
    return result


def load(path):
    """torch.save's zip format (torch >= 1.6: archive/data.pkl and one record per storage in
    archive/data/), or the legacy format before it (fairseq's wav2vec 2.0 checkpoints of 2020)"""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return load_legacy(f)
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("no data.pkl in the zip: not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        return Unpickler(io.BytesIO(z.read(pkl[0])), lambda key: z.read(prefix + "data/" + key)).load()


def plain(x):
    """a config made of stubs (omegaconf DictConfig, argparse.Namespace) as plain dicts and values"""
    if isinstance(x, Stub):
        s = x.state
        if isinstance(s, tuple) and len(s) == 2 and isinstance(s[1], dict):  # (dict state, slots)
            s = {**(s[0] or {}), **s[1]}
        if isinstance(s, dict) and "_content" in s:  # omegaconf containers
            return plain(s["_content"])
        if isinstance(s, dict) and "_val" in s:  # omegaconf value nodes
            return plain(s["_val"])
        if isinstance(s, dict):  # argparse.Namespace and the like
            return {k: plain(v) for k, v in s.items()}
        return [plain(a) for a in x.args] if x.args else None
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def conv_layers(text):
    """fairseq's conv_feature_layers ("[(512,10,5)] + [(512,3,2)]*4"), evaluated on its syntax tree:
    lists, tuples, integers, + and * only"""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, (ast.List, ast.Tuple)):
            v = [ev(e) for e in n.elts]
            return v if isinstance(n, ast.List) else tuple(v)
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Mult)):
            a, b = ev(n.left), ev(n.right)
            return a + b if isinstance(n.op, ast.Add) else a * b
        raise ValueError("conv_feature_layers: unexpected %s" % ast.dump(n))
    return ev(ast.parse(text, mode="eval"))


FAIRSEQ_NAMES = [  # fairseq name (regex) -> transformers name
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"feature_extractor\.conv_layers\.0\.2\.", r"feature_extractor.conv_layers.0.layer_norm."),  # group norm
    (r"feature_extractor\.conv_layers\.(\d+)\.1\.1\.", r"feature_extractor.conv_layers.\1.layer_norm."),  # layer norm
    (r"^layer_norm\.", r"feature_projection.layer_norm."),
    (r"^post_extract_proj\.", r"feature_projection.projection."),
    (r"^mask_emb$", r"masked_spec_embed"),
    (r"^encoder\.pos_conv\.0\.", r"encoder.pos_conv_embed.conv."),
    (r"\.self_attn\.", r".attention."),
    (r"\.self_attn_layer_norm\.", r".layer_norm."),
    (r"\.fc1\.", r".feed_forward.intermediate_dense."),
    (r"\.fc2\.", r".feed_forward.output_dense."),
    (r"^quantizer\.vars$", r"quantizer.codevectors"),
    (r"^final_proj\.", r"project_hid."),  # wav2vec 2.0; HuBERT's final_proj keeps its name (below)
]


def fairseq_to_hf(ckpt):
    if not isinstance(ckpt, dict) or "model" not in ckpt or not ("cfg" in ckpt or "args" in ckpt):
        raise ValueError("not a fairseq checkpoint: no \"model\" with \"cfg\" or \"args\"")
    cfg = plain(ckpt.get("cfg")) or {}
    args = plain(ckpt.get("args")) or {}
    if not isinstance(cfg, dict) or not isinstance(args, dict):
        raise ValueError("\"cfg\" / \"args\" is not a fairseq model config")
    model_cfg, task = cfg.get("model") or args, cfg.get("task") or args
    if not isinstance(model_cfg, dict) or not isinstance(task, dict):
        raise ValueError("\"cfg\" has no model / task config")
    kind = model_cfg.get("_name") or model_cfg.get("arch") or ""
    kind = "hubert" if "hubert" in kind else "wav2vec2" if "wav2vec" in kind else kind
    if kind not in ("hubert", "wav2vec2"):
        raise ValueError("fairseq model %r: koe computes HuBERT and wav2vec 2.0 only" % kind)
    if model_cfg.get("activation_fn", "gelu") != "gelu":
        raise ValueError("activation_fn %r: koe's encoder uses GELU" % model_cfg["activation_fn"])
    conv = conv_layers(model_cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2"))
    g = lambda k, d: model_cfg.get(k, d) if model_cfg.get(k) is not None else d
    config = {
        "architectures": ["HubertModel" if kind == "hubert" else "Wav2Vec2ForPreTraining"], "model_type": kind,
        "conv_dim": [c[0] for c in conv], "conv_kernel": [c[1] for c in conv], "conv_stride": [c[2] for c in conv],
        "conv_bias": bool(g("conv_bias", False)),
        "feat_extract_norm": "layer" if g("extractor_mode", "default") == "layer_norm" else "group",
        "feat_extract_activation": "gelu", "hidden_act": "gelu", "hidden_size": g("encoder_embed_dim", 768),
        "num_hidden_layers": g("encoder_layers", 12), "num_attention_heads": g("encoder_attention_heads", 12),
        "intermediate_size": g("encoder_ffn_embed_dim", 3072), "num_conv_pos_embeddings": g("conv_pos", 128),
        "num_conv_pos_embedding_groups": g("conv_pos_groups", 16), "do_stable_layer_norm": bool(g("layer_norm_first", False)),
        "layer_norm_eps": 1e-5, "feature_grad_mult": g("feature_grad_mult", 0.1), "do_normalize": bool(task.get("normalize", False)),
    }
    if kind == "wav2vec2":  # the quantizer's shape, under transformers' Wav2Vec2Config names
        final_dim = g("final_dim", 0) or config["hidden_size"]
        config.update(num_codevector_groups=g("latent_groups", 2), num_codevectors_per_group=g("latent_vars", 320),
                      codevector_dim=g("latent_dim", 0) or final_dim, proj_codevector_dim=final_dim)
    sd = {}
    for k, v in ckpt["model"].items():
        n = k
        for pat, rep in FAIRSEQ_NAMES:
            if kind == "hubert" and pat.startswith(r"^final_proj"):
                continue
            n = re.sub(pat, rep, n)
        sd[n] = v
    return config, sd


def write_safetensors(path, sd):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        b = v.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def main(src, out):
    os.makedirs(out, exist_ok=True)
    if os.path.isdir(src):
        index = os.path.join(src, "pytorch_model.bin.index.json")
        files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["pytorch_model.bin"]
        sd = {}
        for f in files:
            part = load(os.path.join(src, f))
            if not isinstance(part, dict):
                raise ValueError("%s: not a state dict" % f)
            sd.update(part)
        for f in ("config.json", "preprocessor_config.json"):
            if os.path.exists(os.path.join(src, f)):
                shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    else:
        config, sd = fairseq_to_hf(load(src))
        json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    write_safetensors(os.path.join(out, "model.safetensors"), sd)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pickle_to_hf.py IN OUT  (IN: a fairseq .pt file or a directory with pytorch_model.bin)")
    try:
        main(sys.argv[1], sys.argv[2])
    except (ValueError, KeyError, OSError, pickle.UnpicklingError, RuntimeError) as e:
        sys.exit("%s: %s" % (sys.argv[1], e))

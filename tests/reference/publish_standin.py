"""tests/reference/publish_standin.py — a koe training checkpoint written as it would be published, for
tests/e2e/init_from.sh (continued pretraining needs weights that learned something, which random
stand-ins have not):

  fairseq-hubert CKPT OUT.pt   a fairseq HuBERT checkpoint: {"cfg": omegaconf DictConfig stand-in
                               (model, task), "model": fairseq's names, final_proj, label_embs_concat}
  hf-wav2vec2 CKPT DIR         DIR (koe export's config.json + model.safetensors) made a transformers
                               Wav2Vec2ForPreTraining: "wav2vec2." prefix, quantizer.codevectors,
                               quantizer.weight_proj, project_q, project_hid, and the codevector fields

The fairseq names and the omegaconf stand-in are hf_standin.py's (written independently of
data/pickle_to_hf.py)."""
import json, os, sys

import h5py, numpy as np, torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_standin


def read(ckpt):
    with h5py.File(ckpt, "r") as h:
        t = h["config"][0]
        sd = {k: torch.from_numpy(np.array(v[()], dtype=np.float32)) for k, v in h["model"].items()}
    text = t.decode() if isinstance(t, bytes) else t
    section, recipe = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            recipe[section + "." + k] = v
    return sd, recipe


def fairseq_hubert(ckpt, out):
    sd, r = read(ckpt)
    heads = {k: sd.pop(k) for k in ("final_proj.weight", "final_proj.bias", "label_embeddings")}
    layer_norm = r["model.extractor_mode"] == "layer_norm"
    model = hf_standin.fairseq_names(sd, layer_norm)
    model.update({"final_proj.weight": heads["final_proj.weight"], "final_proj.bias": heads["final_proj.bias"],
                  "label_embs_concat": heads["label_embeddings"]})
    b = lambda k: r[k] == "true"
    mcfg = {"_name": "hubert", "extractor_mode": r["model.extractor_mode"], "encoder_layers": int(r["model.encoder_layers"]),
            "encoder_embed_dim": int(r["model.encoder_embed_dim"]), "encoder_ffn_embed_dim": int(r["model.encoder_ffn_embed_dim"]),
            "encoder_attention_heads": int(r["model.encoder_attention_heads"]), "activation_fn": "gelu",
            "layer_norm_first": b("model.layer_norm_first"), "conv_feature_layers": r["model.conv_feature_layers"],
            "conv_bias": b("model.conv_bias"), "conv_pos": int(r["model.conv_pos"]),
            "conv_pos_groups": int(r["model.conv_pos_groups"]), "final_dim": int(r["objective.final_dim"]),
            "feature_grad_mult": float(r["model.feature_grad_mult"]), "mask_prob": 0.8}
    task = {"_name": "hubert_pretraining", "normalize": b("model.normalize_waveform"), "sample_rate": 16000,
            "label_rate": float(r["objective.label_rate"])}
    torch.save({"cfg": hf_standin.omegaconf_standin({"model": mcfg, "task": task}), "model": model}, out)


def hf_wav2vec2(ckpt, d):
    sd, r = read(ckpt)
    heads = {"quantizer.codevectors": "quantizer.codevectors", "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
             "quantizer.weight_proj.bias": "quantizer.weight_proj.bias", "project_q.weight": "project_q.weight",
             "project_q.bias": "project_q.bias", "final_proj.weight": "project_hid.weight", "final_proj.bias": "project_hid.bias"}
    out = {("" if k in heads else "wav2vec2.") + heads.get(k, k): v for k, v in sd.items()}
    hf_standin.write_safetensors(d + "/model.safetensors", out, "F32")
    cfg = json.load(open(d + "/config.json"))
    final_dim, latent = int(r["objective.final_dim"]), int(r["objective.latent_dim"])
    cfg.update(architectures=["Wav2Vec2ForPreTraining"], num_codevector_groups=int(r["objective.latent_groups"]),
               num_codevectors_per_group=int(r["objective.latent_vars"]), codevector_dim=latent or final_dim,
               proj_codevector_dim=final_dim)
    json.dump(cfg, open(d + "/config.json", "w"), indent=2)


if __name__ == "__main__":
    {"fairseq-hubert": fairseq_hubert, "hf-wav2vec2": hf_wav2vec2}[sys.argv[1]](sys.argv[2], sys.argv[3])

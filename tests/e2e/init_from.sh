#!/usr/bin/env bash
# init_from.sh — continued pretraining from a published model: `koe init --from` it, then `koe train
# run.init_from=CKPT`. The "published" models are tiny koe runs on the demo corpus written in the
# published layouts (tests/reference/publish_standin.py): a fairseq HuBERT .pt (final_proj,
# label_embs_concat) and a transformers Wav2Vec2ForPreTraining directory (quantizer, project_hid,
# project_q). The HuBERT import continues for 50 updates on the same labels from step 0 and its loss at
# update 1 has kept at least half of what the published run learned (between a from-scratch model's
# loss at update 1 and the published run's last logged loss); with new labels of another k it keeps
# the encoder and final_proj and starts fresh label embeddings; the wav2vec 2.0 import brings its
# quantizer (codevectors equal the published ones) and its loss at update 1 is below a from-scratch
# model's. BEST-RQ continues from an fbank-frontend export with the encoder only. A different
# architecture is refused naming the key, a directory with what to run. A run's RUN/checkpoints/latest
# stands for the step file it names (run.init_from, --ckpt, koe info).
set -euo pipefail
T="$KOE_TMP/init_from"
mkdir -p "$T"
export KOE_PYTHON=$PYTHON  # the pickle converter's python (with torch)
cd "$T"
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 20 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km20 2> /dev/null

SMALL=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.min_sample_size=16000
       "model.conv_feature_layers=[(64,10,5)] + [(64,3,2)]*4 + [(64,2,2)]*2" model.encoder_embed_dim=64
       model.encoder_layers=2 model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16
       model.conv_pos_groups=4 model.dropout=0 model.attention_dropout=0 model.dropout_input=0
       model.encoder_layerdrop=0 run.valid_every=0 run.seed=5)
HUB=("${SMALL[@]}" data.labels=km20 objective.label_rate=100 objective.final_dim=32 optim.lr=0.002)
W2V=("${SMALL[@]}" objective.final_dim=32 objective.latent_vars=16 objective.num_negatives=10 optim.lr=0.002
     "objective.temp=(2,0.5,0.99)" run.health_min_ppl=0)
loss1() { "$PYTHON" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["loss"])' "$1"; }

# HuBERT: published run (200 updates), as fairseq's .pt; imported; continued; from scratch
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" optim.warmup=20 optim.max_updates=200 run.log_every=10 \
  run.save_every=200 run.dir=pub_h > /dev/null 2> pub_h.err || { cat pub_h.err; exit 1; }
"$PYTHON" "$KOE_ROOT/tests/reference/publish_standin.py" fairseq-hubert pub_h/checkpoints/step-00000200.h5 hubert.pt
"$KOE" init --from hubert.pt --out imp_h.h5 2> imp_h.err || { cat imp_h.err; exit 1; }
grep -q "pretraining head imported (3 tensors" imp_h.err || { cat imp_h.err; exit 1; }
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" optim.warmup=10 optim.max_updates=50 run.log_every=1 \
  run.save_every=50 run.init_from=imp_h.h5 run.dir=cont_h > /dev/null 2> cont_h.err || { cat cont_h.err; exit 1; }
grep -q "run.init_from: weights from imp_h.h5 (encoder, 3 of 3 head tensors); fresh optimizer, step 0" cont_h.err \
  || { cat cont_h.err; exit 1; }
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" optim.warmup=1 optim.max_updates=2 run.log_every=1 \
  run.dir=scratch_h > /dev/null 2> scratch_h.err || { cat scratch_h.err; exit 1; }
"$PYTHON" - pub_h/log.jsonl cont_h/log.jsonl scratch_h/log.jsonl cont_h/checkpoints/step-00000050.h5 <<'PY'
import json, sys, h5py
pub, cont, scratch = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
assert [r["step"] for r in cont] == list(range(1, 51)), [r["step"] for r in cont]  # step 0, 50 updates
with h5py.File(sys.argv[4], "r") as h:
    assert h["state"].attrs["step"] == 50 and h["state"].attrs["adam_t"] == 50, dict(h["state"].attrs)
learned, c1, s1 = pub[-1]["loss"], cont[0]["loss"], scratch[0]["loss"]
print(f"HuBERT loss at update 1: continued {c1:.3f}, from scratch {s1:.3f}; published run's last {learned:.3f}")
assert s1 - learned > 0.5, "the published run learned too little to tell"
assert c1 < s1 - 0.5 * (s1 - learned), "the continued run did not start from the published weights"
PY

# 2 ranks: rank 0 reads the file and broadcasts it (strace: one process opens it); update 1's loss is
# the 1-rank run's (rank equivalence)
mpirun --oversubscribe -np 2 strace -ff -e trace=openat -o opens "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" \
  "${HUB[@]}" optim.warmup=1 optim.max_updates=2 run.log_every=1 run.init_from=imp_h.h5 run.dir=cont_h2 > /dev/null \
  2> cont_h2.err || { cat cont_h2.err; exit 1; }
[ "$(grep -c 'run.init_from: weights from imp_h.h5' cont_h2.err)" = 1 ] || { cat cont_h2.err; exit 1; }
[ "$(grep -l '"imp_h.h5"' opens.* | wc -l)" = 1 ] || { echo "imp_h.h5 opened by $(grep -l '"imp_h.h5"' opens.* | wc -l) processes"; exit 1; }
"$PYTHON" - "$(loss1 cont_h/log.jsonl)" "$(loss1 cont_h2/log.jsonl)" <<'PY'
import sys
a, b = map(float, sys.argv[1:])
print(f"HuBERT loss at update 1 from imp_h.h5: 1 rank {a:.7f}, 2 ranks {b:.7f}")
assert abs(a - b) <= 1e-5 * abs(a), "2 ranks did not start from the same weights as 1"
PY
if mpirun --oversubscribe -np 2 "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" model.encoder_layers=3 \
     run.init_from=imp_h.h5 run.dir=bad2r > /dev/null 2> bad2r.err; then echo "another architecture was accepted at 2 ranks"; exit 1; fi
grep -q "model.encoder_layers = 2 there, 3 in this recipe" bad2r.err || { cat bad2r.err; exit 1; }

# iteration-2 style: new labels (k = 30) take the encoder and final_proj, and fresh label embeddings
"$KOE" kmeans --corpus corp --source mfcc --k 30 --out km30.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km30.h5 --name km30 2> /dev/null
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" data.labels=km30 optim.warmup=1 optim.max_updates=2 \
  run.init_from=imp_h.h5 run.dir=iter2_h > /dev/null 2> iter2_h.err || { cat iter2_h.err; exit 1; }
grep -q "label_embeddings has another shape in imp_h.h5" iter2_h.err && grep -q "(encoder, 2 of 3 head tensors)" iter2_h.err \
  || { cat iter2_h.err; exit 1; }

# wav2vec 2.0: published run (150 updates) as Wav2Vec2ForPreTraining; imported with its quantizer
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${W2V[@]}" optim.warmup=20 optim.max_updates=150 run.log_every=10 \
  run.save_every=150 run.dir=pub_w > /dev/null 2> pub_w.err || { cat pub_w.err; exit 1; }
"$KOE" export --ckpt pub_w/checkpoints/step-00000150.h5 --out w2v2_hf 2> /dev/null
"$PYTHON" "$KOE_ROOT/tests/reference/publish_standin.py" hf-wav2vec2 pub_w/checkpoints/step-00000150.h5 w2v2_hf
"$KOE" init --from w2v2_hf --out imp_w.h5 2> imp_w.err || { cat imp_w.err; exit 1; }
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${W2V[@]}" optim.warmup=5 optim.max_updates=10 run.log_every=1 \
  run.save_every=10 run.init_from=imp_w.h5 run.dir=cont_w > /dev/null 2> cont_w.err || { cat cont_w.err; exit 1; }
grep -q "(encoder, 7 of 7 head tensors)" cont_w.err || { cat cont_w.err; exit 1; }
"$KOE" train "$KOE_ROOT/recipes/tiny/wav2vec2.ini" "${W2V[@]}" optim.warmup=1 optim.max_updates=2 run.log_every=1 \
  run.dir=scratch_w > /dev/null 2> scratch_w.err || { cat scratch_w.err; exit 1; }
"$PYTHON" - pub_w/checkpoints/step-00000150.h5 imp_w.h5 cont_w/log.jsonl scratch_w/log.jsonl <<'PY'
import json, sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
    for k in a["model"]:
        assert np.array_equal(a["model"][k][()], b["model"][k][()]), k  # every tensor, the quantizer's too
cont, scratch = ([json.loads(l) for l in open(p)] for p in sys.argv[3:5])
c1, s1 = cont[0]["loss"], scratch[0]["loss"]
print(f"wav2vec 2.0 loss at update 1: continued {c1:.3f}, from scratch {s1:.3f}")
assert c1 < s1, "the continued run did not start from the published weights"
PY

# BEST-RQ continues with the encoder only: a Hugging Face export of an fbank-frontend model has no
# quantizer, and the run's own frozen one (from run.seed) is used
BRQ=(data.corpus=corp data.max_tokens=96000 data.max_sample_size=32000 model.encoder_embed_dim=64 model.encoder_layers=2
     model.encoder_attention_heads=2 model.encoder_ffn_embed_dim=128 model.conv_pos=16 model.conv_pos_groups=4
     objective.codebook_size=64 run.valid_every=0 run.health_min_target_ppl=0 optim.warmup=1 optim.max_updates=2)
"$KOE" init "$KOE_ROOT/recipes/tiny/bestrq.ini" "${BRQ[@]}" run.seed=9 --out brq0.h5 2> /dev/null
"$KOE" export --ckpt brq0.h5 --out brq_hf 2> /dev/null
"$KOE" init --from brq_hf --out imp_b.h5 2> /dev/null
"$KOE" train "$KOE_ROOT/recipes/tiny/bestrq.ini" "${BRQ[@]}" run.init_from=imp_b.h5 run.dir=cont_b > /dev/null 2> cont_b.err \
  || { cat cont_b.err; exit 1; }
grep -q "(encoder, 0 of 4 head tensors)" cont_b.err && grep -q "quantizer.0.codebook is not in imp_b.h5" cont_b.err \
  || { cat cont_b.err; exit 1; }

# a run's RUN/checkpoints/latest (the one-line pointer koe train keeps) stands for the step file it names,
# in run.init_from, --ckpt and koe info; one that names a missing file says which and what to pass
"$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" optim.warmup=1 optim.max_updates=2 \
  run.init_from=pub_h/checkpoints/latest run.dir=cont_latest > /dev/null 2> cont_latest.err || { cat cont_latest.err; exit 1; }
grep -q "run.init_from = pub_h/checkpoints/latest names the run's newest checkpoint, pub_h/checkpoints/step-00000200.h5" \
  cont_latest.err && grep -q "weights from pub_h/checkpoints/step-00000200.h5 (encoder, 3 of 3" cont_latest.err \
  || { cat cont_latest.err; exit 1; }
"$KOE" export --ckpt pub_w/checkpoints/step-00000150.h5 --out w_step 2> /dev/null
"$KOE" export --ckpt pub_w/checkpoints/latest --out w_latest 2> w_latest.err || { cat w_latest.err; exit 1; }
grep -q "pub_w/checkpoints/latest names the run's newest checkpoint, pub_w/checkpoints/step-00000150.h5" w_latest.err \
  || { cat w_latest.err; exit 1; }
cmp w_step/model.safetensors w_latest/model.safetensors
"$KOE" info pub_h/checkpoints/latest > info_latest.out
grep -q "^pub_h/checkpoints/latest names the run's newest checkpoint, pub_h/checkpoints/step-00000200.h5" info_latest.out \
  && grep -q "^format *koe-checkpoint" info_latest.out || { cat info_latest.out; exit 1; }
mkdir -p gone && echo step-00000007.h5 > gone/latest
if "$KOE" export --ckpt gone/latest --out w_gone 2> gone.err; then echo "a latest naming a missing file was accepted"; exit 1; fi
grep -q "koe export: --ckpt gone/latest: it is a run's pointer to its newest checkpoint, gone/step-00000007.h5, which is not there" \
  gone.err || { cat gone.err; exit 1; }
if "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" run.init_from=gone/latest run.dir=bad_gone > /dev/null \
     2> bad_gone.err; then echo "run.init_from naming a missing file was accepted"; exit 1; fi
grep -q "run.init_from = gone/latest: it is a run's pointer .*pass one of the run's step-NNNNNNNN.h5 files" bad_gone.err \
  || { cat bad_gone.err; exit 1; }

# refusals: another architecture names the key; a directory says what to run
if "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" model.encoder_layers=3 run.init_from=imp_h.h5 \
     run.dir=bad > /dev/null 2> bad.err; then echo "another architecture was accepted"; exit 1; fi
grep -q "model.encoder_layers = 2 there, 3 in this recipe" bad.err || { cat bad.err; exit 1; }
if "$KOE" train "$KOE_ROOT/recipes/tiny/hubert.ini" "${HUB[@]}" run.init_from=w2v2_hf run.dir=bad2 > /dev/null 2> bad2.err
  then echo "a directory was accepted"; exit 1; fi
grep -q "koe init --from w2v2_hf --out CKPT.h5" bad2.err || { cat bad2.err; exit 1; }
echo "init_from: ok"

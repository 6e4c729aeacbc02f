#!/usr/bin/env bash
# tests/e2e/train_tensorboard.sh — koe train's TensorBoard event files (RUN/tb/train, RUN/tb/valid)
# read back by an independent decoder (tests/reference/tfevents_decode.py: protobuf from a minimal
# .proto, CRC-32C from crcmod): a 2-rank tiny BEST-RQ run with validation, and the same run killed with
# kill -9 after a checkpoint and resumed. Every record's CRCs hold, each file starts with file_version
# "brain.Event:2", the train files carry the recipe as text, every (step, tag) equals log.jsonl's
# value (as float32), and the resumed run's merged series (TensorBoard's rule: a SessionLog START drops
# the older files' later points) equal the uninterrupted run's, timing tags excluded.
set -euo pipefail
T="$KOE_TMP/train_tensorboard"
mkdir -p "$T"
cd "$T"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$KOE" synth --out syn --minutes 1 --langs en --seed 3 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null

OV=(data.corpus=corp data.valid_corpus=corp data.max_tokens=96000 data.max_sample_size=32000 data.threads=0
    model.encoder_embed_dim=64 model.encoder_layers=1 model.encoder_attention_heads=2
    model.encoder_ffn_embed_dim=128 model.dropout=0 model.attention_dropout=0 model.dropout_input=0
    model.encoder_layerdrop=0 objective.codebook_size=512 optim.lr=0.002 optim.warmup=5
    optim.max_updates=20 run.log_every=1 run.save_every=4 run.keep_last=3 run.valid_every=4)
RECIPE="$KOE_ROOT/recipes/tiny/bestrq.ini"
export KOE_TEST_HANG_AT_STEP=-1 # never; the killed run below holds rank 1 at a step
train() { local dir=$1; shift; mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    -x KOE_TEST_HANG_AT_STEP "$KOE" train "$RECIPE" "${OV[@]}" run.dir="$dir" "$@"; }
decode() { "$PYTHON" "$KOE_ROOT/tests/reference/tfevents_decode.py" check "$@"; }

train ref > /dev/null 2> ref.err || { cat ref.err; exit 1; }
test "$(wc -l < ref/log.jsonl)" = 20
decode ref ref/log.jsonl

# kill -9 between checkpoints (rank 1 held before update `at` by KOE_TEST_HANG_AT_STEP, as in
# train_resume.sh), so the killed run's files hold points after its last checkpoint
at=$((4 * (1 + RANDOM % 3) + 1 + RANDOM % 3))
KOE_TEST_HANG_AT_STEP=$at setsid mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    -x KOE_TEST_HANG_AT_STEP "$KOE" train "$RECIPE" "${OV[@]}" run.dir=k > /dev/null 2> kill.err &
pid=$!
for _ in $(seq 600); do test -f k/log.jsonl && test "$(wc -l < k/log.jsonl)" -ge $at && break; sleep 0.1; done
test "$(wc -l < k/log.jsonl)" -ge $at || { echo "FAIL: the run never reached step $at"; cat kill.err; exit 1; }
kill -9 -- -"$pid" 2> /dev/null || true # mpirun leads its own process group: it and the ranks
wait "$pid" 2> /dev/null || true
echo "killed at step $at (latest: $(cat k/checkpoints/latest))"
test "$(ls k/tb/train | wc -l)" = 1
train k > /dev/null 2> k.err || { cat k.err; exit 1; }
grep -q "resumed from k/checkpoints/" k.err
test "$(ls k/tb/train | wc -l)" = 2 && test "$(ls k/tb/valid | wc -l)" = 2
decode k k/log.jsonl --uninterrupted ref
echo "event files of an uninterrupted and of a killed and resumed run decode to log.jsonl's values"

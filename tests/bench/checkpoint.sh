# checkpoint.sh — `make bench BENCH=checkpoint`: collective checkpoint write and load of the base
# HuBERT model (recipes/base/hubert_iter1.ini, ~95M parameters + AdamW moments) on 1 and on 2 ranks,
# and the bytes written. One `koe train` update with max_updates=1 writes the
# checkpoint (its "checkpoint ... written in" line); the same command again only loads it (its "read
# and verified in" line, with its phases), and a line gives the 2-rank load time over the 1-rank one,
# without and with ZeRO-1. Times include the checksums; the 2-rank run writes one file through MPI-IO.
set -euo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d /tmp/koe-bench-ckpt.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
"$KOE" synth --out syn --minutes 1 --langs en --seed 1 2> /dev/null
"$KOE" prepare --out corp syn 2> /dev/null
"$KOE" kmeans --corpus corp --source mfcc --k 100 --out km.h5 2> /dev/null
"$KOE" label --corpus corp --kmeans km.h5 --name km100 2> /dev/null
OV=(data.corpus=corp data.labels=km100 data.max_tokens=64000 data.max_sample_size=32000 data.threads=0
    optim.max_updates=1 optim.warmup=0 run.valid_every=0 run.save_every=1 run.keep_last=1)
R="$KOE_ROOT/recipes/base/hubert_iter1.ini"
# Twice: the recipe as it is (run.zero=0: every rank reads and holds all the moments, so 2 ranks on one
# node fill twice the fresh memory of 1) and with ZeRO-1 (run.zero=1: each rank its slice of them).
for zero in 0 1; do
for n in 1 2; do
    d=r$n.z$zero
    mpirun --oversubscribe -np $n -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x HDF5_USE_FILE_LOCKING \
        "$KOE" train "$R" "${OV[@]}" run.zero=$zero run.dir=$d > /dev/null 2> $d.w.err || { cat $d.w.err; exit 1; }
    mpirun --oversubscribe -np $n -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x HDF5_USE_FILE_LOCKING \
        "$KOE" train "$R" "${OV[@]}" run.zero=$zero run.dir=$d > /dev/null 2> $d.l.err || { cat $d.l.err; exit 1; }
    w=$(grep -o 'checkpoint [^ ]* ([0-9]* bytes, written in [0-9.]* s' $d.w.err)
    bytes=$(echo "$w" | sed -E 's/.*\(([0-9]+) bytes.*/\1/')
    wt=$(echo "$w" | sed -E 's/.*written in ([0-9.]+) s/\1/')
    lt=$(grep -o 'read and verified in [0-9.]* s' $d.l.err | grep -o '[0-9.]* s' | cut -d' ' -f1)
    printf '   base checkpoint, run.zero=%d, %d rank%s: bytes=%s write_s=%s (%s MB/s) load_s=%s (%s MB/s)\n' $zero $n \
        "$([ $n = 1 ] || echo s)" "$bytes" "$wt" "$(awk -v b="$bytes" -v t="$wt" 'BEGIN{printf "%.0f", b/t/1e6}')" \
        "$lt" "$(awk -v b="$bytes" -v t="$lt" 'BEGIN{printf "%.0f", b/t/1e6}')"
    printf '     load phases: %s\n' "$(grep -o '(s: moments read.*' $d.l.err)"
    [ $n = 1 ] && lt1=$lt
done
# the goal: 2 ranks load no slower than 1 (each rank reads and hashes its share of the file, then one
# allgather; distributed/ckpt.c)
printf '   base checkpoint load, run.zero=%d, 2 ranks / 1 rank: %s (goal <= 1)\n' $zero \
    "$(awk -v a="$lt" -v b="$lt1" 'BEGIN{printf "%.2f", a/b}')"
rm -rf r1.z$zero r2.z$zero
done

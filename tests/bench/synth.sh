#!/usr/bin/env bash
# tests/bench/synth.sh — `koe synth` CPU seconds per minute of audio (the goal: "minutes of audio in
# seconds of CPU"), against the espeak-ng command line speaking the same sentences with the same
# voice, rate and pitch in the same run (one process per utterance, 22.05 kHz, no resampling, no
# alignments). Median of 3 for koe; 1 rank and 2 ranks.
set -euo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MIN=${SYNTH_BENCH_MINUTES:-10}
cpu_per_min() { sed -n 's/.*CPU s on .*: \([0-9.]*\) CPU s per minute.*/\1/p'; }
wall() { sed -n 's/.*synth: \([0-9.]*\) s wall.*/\1/p'; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
ours=() walls=()
for r in 1 2 3; do
  rm -rf "$KOE_TMP/synth$r"
  log=$("$KOE" synth --out "$KOE_TMP/synth$r" --minutes "$MIN" 2>&1)
  ours+=("$(echo "$log" | cpu_per_min)"); walls+=("$(echo "$log" | wall)")
done
log2=$(mpirun -np 2 "$KOE" synth --out "$KOE_TMP/synth_np2" --minutes "$MIN" 2>&1)
o=$(median3 "${ours[@]}")
"$PYTHON" - "$KOE_TMP/synth1" "$o" "$(median3 "${walls[@]}")" "$(echo "$log2" | wall)" "$MIN" <<'EOF'
import os, resource, subprocess, sys, tempfile
d, ours, wall1, wall2, minutes = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(d, "utts.txt"), encoding="utf-8")][1:]
voices = {"en": "en", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "pl": "pl",
          "cs": "cs", "fi": "fi", "ru": "ru", "tr": "tr", "sw": "sw", "hi": "hi"}
before = resource.getrusage(resource.RUSAGE_CHILDREN)
with tempfile.TemporaryDirectory() as tmp:
    for uid, spk, rate, pitch, rng, text in rows:
        lang = uid.split("/")[0]
        subprocess.run(["espeak-ng", "-v", f"{voices[lang]}+{spk}", "-s", rate, "-p", pitch,
                        "-w", os.path.join(tmp, "x.wav"), text], check=True)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cli = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
audio_min = sum(int(l.split("\t")[1]) for l in open(os.path.join(d, "train.tsv")).read().splitlines()[1:]) / 16000 / 60
cli_per_min = cli / audio_min
print(f"   koe synth: {ours:.3f} CPU s per minute of audio ({60 / ours:.0f}x real time per core), "
      f"{audio_min:.1f} min in {wall1:.1f} s wall on 1 rank, {wall2:.1f} s on 2 ranks")
print(f"   espeak-ng CLI, same sentences: {cli_per_min:.3f} CPU s per minute  ratio={cli_per_min / ours:.2f} "
      f"(koe includes resampling, alignments and the per-utterance fork)")
EOF

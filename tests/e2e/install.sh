#!/usr/bin/env bash
# install.sh — `make install DESTDIR=...` into a staging tree, then as a cluster user would:
# `module load koe` (Debian's Lmod) of the installed modulefile puts the installed koe on PATH
# (`koe --version`) and the zstd plugin on HDF5_PLUGIN_PATH (h5dump reads a corpus shard's audio),
# `man koe-train` renders with the recipe keys, bash completion completes `koe tr<TAB>` and
# `model.enc<TAB>`, and CITATION.cff's version is the VERSION file's.
set -euo pipefail
T=$KOE_TMP/install
mkdir -p "$T/wav"
cd "$KOE_ROOT"
make --no-print-directory install BUILD="$KOE_BUILD" DESTDIR="$T/stage" PREFIX=/opt/koe > "$T/make.log"
P=$T/stage/opt/koe
[ -x "$P/bin/koe" ] && [ -f "$P/lib/koe/hdf5-plugins/libh5zstd.so" ]
[ -x "$P/share/koe/pickle_to_hf.py" ] && [ -f "$P/share/koe/recipes/base/hubert_iter1.ini" ] && [ -f "$P/share/koe/launch/slurm/pretrain.sbatch" ]
grep -q "^version: \"$(cat VERSION)\"" CITATION.cff
[ -f "$P/share/doc/koe/CITATION.cff" ]

# a corpus for h5dump
"$PYTHON" - "$T/wav/a.wav" <<'PY'
import sys, numpy as np, soundfile
soundfile.write(sys.argv[1], (3000 * np.sin(np.arange(16000) * 0.05)).astype(np.int16), 16000, subtype="PCM_16")
PY
"$KOE" prepare --out "$T/corpus" "$T/wav" > /dev/null

env -i HOME="$HOME" PATH=/usr/bin:/bin T="$T" P="$P" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  bash --norc --noprofile -c '
set -euo pipefail
source /usr/share/lmod/lmod/init/bash
module use "$P/share/modulefiles"
module load koe
[ "$(command -v koe)" = "$P/bin/koe" ] || { echo "koe on PATH is $(command -v koe)"; exit 1; }
koe --version | grep -q "^koe [0-9]"
case :$HDF5_PLUGIN_PATH: in *":$P/lib/koe/hdf5-plugins:"*) ;; *) echo "HDF5_PLUGIN_PATH=$HDF5_PLUGIN_PATH"; exit 1 ;; esac
h5dump -d /audio -s 100 -c 4 "$T/corpus/shard-00000.h5" > "$T/h5dump.out"
grep -q "(100): " "$T/h5dump.out" || { cat "$T/h5dump.out"; exit 1; }
! grep -qi "error\|filter.*not" "$T/h5dump.out"
# man
MANWIDTH=100 man koe-train > "$T/man.txt" 2> "$T/man.err"
grep -q "KOE-TRAIN" "$T/man.txt" && grep -q "encoder_embed_dim" "$T/man.txt"
man koe > /dev/null
# completion
source "$P/share/bash-completion/completions/koe"
COMP_WORDS=(koe tr); COMP_CWORD=1; _koe
[ "${COMPREPLY[*]}" = train ] || { echo "koe tr<TAB>: ${COMPREPLY[*]}"; exit 1; }
COMP_WORDS=(koe train r.ini model.enc); COMP_CWORD=3; _koe
case " ${COMPREPLY[*]} " in *" model.encoder_layers= "*) ;; *) echo "model.enc<TAB>: ${COMPREPLY[*]}"; exit 1 ;; esac
for c in "${COMPREPLY[@]}"; do [[ $c == model.enc* ]] || { echo "model.enc<TAB> offers $c"; exit 1; }; done
COMP_WORDS=(koe init --fr); COMP_CWORD=2; _koe
[ "${COMPREPLY[*]}" = --from ] || { echo "koe init --fr<TAB>: ${COMPREPLY[*]}"; exit 1; }
'
echo "install: ok"

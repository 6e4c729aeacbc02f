#!/usr/bin/env bash
# man.sh KOE OUTDIR — man pages from koe's own help (help2man): OUTDIR/koe.1 from `koe --help`, and
# OUTDIR/koe-CMD.1 from `koe help CMD` for every command `koe help` lists, so that `man koe-train`
# shows every option and recipe key with its default. `make install` runs it; nothing is written by
# hand twice.
set -euo pipefail
KOE=${1:?usage: man.sh KOE OUTDIR}
OUT=${2:?usage: man.sh KOE OUTDIR}
mkdir -p "$OUT"
h2m() { help2man --no-info --no-discard-stderr --version-option=--version "$@" "$KOE"; }
h2m --name="self-supervised speech pretraining on CPU clusters" --help-option=--help -o "$OUT/koe.1"
"$KOE" help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { $1 = $1; print } on && /^$/ { on = 0 }' |
  while read -r cmd summary; do
    h2m --name="$summary" --help-option="help $cmd" -o "$OUT/koe-$cmd.1"
    # the page is koe-CMD's: title and NAME line
    sed -i -e "s/^\.TH KOE /.TH KOE-${cmd^^} /" -e "s/^koe \\\\- /koe-$cmd \\\\- /" "$OUT/koe-$cmd.1"
  done

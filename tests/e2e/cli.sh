# cli.sh — the koe binary's command line contract: usage, help for every command, exit codes.
set -euo pipefail
out=$("$KOE" help)
for c in synth prepare info features; do
  grep -q "^  $c " <<<"$out" || { echo "koe help does not list $c"; exit 1; }
  "$KOE" help "$c" | grep -q . || { echo "koe help $c is empty"; exit 1; }
done
set +e
"$KOE" >/dev/null 2>&1; [ $? = 1 ] || { echo "koe without a command must exit 1"; exit 1; }
msg=$("$KOE" frobnicate 2>&1); rc=$?
set -e
[ $rc = 1 ] || { echo "unknown command must exit 1, got $rc"; exit 1; }
grep -q "unknown command 'frobnicate'" <<<"$msg" || { echo "no message naming the unknown command: $msg"; exit 1; }
echo ok

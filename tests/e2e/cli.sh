# cli.sh — the koe binary's command line contract: usage, help for every command (generated from
# each command's flag table, recipes/cli.h), checked values, exit codes, the version.
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

# Every command's flags, as they were before the flag tables: the help of each lists each of them,
# `koe help CMD` and `koe CMD --help` print the same, and `koe help` lists the command.
declare -A flags=(
  [synth]="--out --langs --minutes --seed --wordlists"
  [prepare]="--out --shard-mb --lang --lang-from-dir --align --allow-pipes --force"
  [info]="--ids"
  [features]="--corpus --kind --out --threads --block-frames"
  [init]="--out --from"
  [embed]="--ckpt --layer --out --corpus"
  [export]="--ckpt --out"
  [bench]="--batch --seconds --steps --threads --classes --no-profile"
  [train]=""
  [kmeans]="--corpus --source --ckpt --k --out --sample --seed --iters --tol --init --init-sample --cache-dir --threads"
  [label]="--corpus --kmeans --name --ckpt --part --threads"
  [analyze]="--corpus --labels --json"
  [plot]="--out --ascii"
)
[ "$(grep -c '^  [a-z]' <<<"$out")" = $((${#flags[@]} + 2)) ] \
  || { echo "koe help lists other commands than the ${#flags[@]} (+ help, version) this test knows:"; echo "$out"; exit 1; }
for c in "${!flags[@]}"; do
  grep -q "^  $c " <<<"$out" || { echo "koe help does not list $c"; exit 1; }
  h=$("$KOE" help "$c") || { echo "koe help $c exits $?"; exit 1; }
  [ "$h" = "$("$KOE" "$c" --help)" ] || { echo "koe help $c and koe $c --help differ"; exit 1; }
  grep -q "^usage: koe $c" <<<"$h" || { echo "koe help $c has no usage line"; exit 1; }
  # the flags in the command's table (recipes/cmd_$c.c) are the ones the help lists, and include the old ones
  table=$(grep -oE 'CLI_[SNBP]\("--[a-z0-9-]+"' "$KOE_ROOT/recipes/cmd_$c.c" | grep -oE -- '--[a-z0-9-]+' || true)
  grep -q 'CLI_THREADS(' "$KOE_ROOT/recipes/cmd_$c.c" && table="$table --threads"
  listed=$( (grep -oE '^  --[a-z0-9-]+' <<<"$h" || true) | tr -d ' ' | sort | tr '\n' ' ')
  [ "$listed" = "$(tr ' ' '\n' <<<"$table" | grep . | sort | tr '\n' ' ')" ] \
    || { echo "koe help $c lists '$listed', its table has '$table'"; exit 1; }
  for f in ${flags[$c]}; do
    grep -qE -- "^  $f( |$)" <<<"$h" || { echo "koe help $c does not list $f:"; echo "$h"; exit 1; }
  done
done

# Bad values: exit 1, a message naming the command, the flag and the accepted range; nothing run.
expect_usage() { # PATTERN ARGS...
  local pat=$1; shift
  local rc=0
  "$KOE" "$@" > "$KOE_TMP/cli.out" 2> "$KOE_TMP/cli.err" || rc=$?
  [ $rc = 1 ] || { echo "koe $*: exit $rc, expected 1"; cat "$KOE_TMP/cli.err"; exit 1; }
  grep -qF -- "$pat" "$KOE_TMP/cli.err" || { echo "koe $*: message lacks '$pat':"; cat "$KOE_TMP/cli.err"; exit 1; }
  [ "$(wc -l < "$KOE_TMP/cli.err")" = 1 ] || { echo "koe $*: more than the one error line:"; cat "$KOE_TMP/cli.err"; exit 1; }
}
R="$KOE_ROOT/recipes/tiny/hubert.ini"
expect_usage "koe bench: --batch 0: must be between 1 and 4096" bench "$R" --batch 0
expect_usage "koe bench: --batch 12x: not an integer" bench "$R" --batch 12x
expect_usage "koe bench: --batch '': not an integer" bench "$R" --batch ""
expect_usage "koe features: --out '': empty value" features --corpus c --kind fbank --out ""
expect_usage "koe kmeans: --out '': empty value" kmeans --corpus c --source mfcc --k 8 --out ""
expect_usage "koe bench: --batch 99999999999999999999: must be between 1 and 4096" bench "$R" --batch 99999999999999999999
expect_usage "koe bench: --seconds 0: must be greater than 0 and at most 3600" bench "$R" --seconds 0
expect_usage "koe bench: --seconds 4s: not a number" bench "$R" --seconds 4s
# the recipes' number syntax (core/config_keys.h): decimal only, whole string
expect_usage "koe bench: --seconds 0x10: not a number" bench "$R" --seconds 0x10
expect_usage "koe bench: --seconds inf: must be greater than 0 and at most 3600" bench "$R" --seconds inf
expect_usage "koe bench: --batch 0x10: not an integer" bench "$R" --batch 0x10
expect_usage "koe bench: --batch  2: not an integer" bench "$R" --batch " 2"
expect_usage "koe bench: --threads -2: must be between 1 and 4096" bench "$R" --threads -2
expect_usage "koe kmeans: --k 70000: must be between 1 and 65535" kmeans --corpus c --source mfcc --out k.h5 --k 70000
expect_usage "koe kmeans: --sample 0: must be greater than 0 and at most 1" kmeans --corpus c --source mfcc --out k.h5 --k 2 --sample 0
expect_usage "koe kmeans: --seed -1: must be between 0 and 9007199254740992" kmeans --corpus c --source mfcc --out k.h5 --k 2 --seed -1
expect_usage "koe kmeans: --init kmeans: expected k-means++ or random" kmeans --corpus c --source mfcc --out k.h5 --k 2 --init kmeans
expect_usage "koe info: --ids many: not an integer" info --ids many x
expect_usage "koe features: --block-frames 0: must be between 1 and" features --corpus c --kind mfcc --out x.h5 --block-frames 0
expect_usage "koe label: --threads 1.5: not an integer" label --corpus c --kmeans k.h5 --name n --threads 1.5
expect_usage "koe embed: --layer x: expected a layer number" embed --ckpt c.h5 --out o.h5 --layer x w.wav
# numbers inside the custom values, in the same syntax: decimal, no blanks, no hex
expect_usage "koe embed: --layer 0x3: expected a layer number" embed --ckpt c.h5 --out o.h5 --layer 0x3 w.wav
expect_usage "koe label: --part 0x1/4: expected I/N" label --corpus c --kmeans k.h5 --name n --part 0x1/4
expect_usage "koe label: --part 1/ 4: expected I/N" label --corpus c --kmeans k.h5 --name n --part "1/ 4"
expect_usage "koe kmeans: --source layer:0x2: expected mfcc, fbank or layer:N" kmeans --corpus c --source layer:0x2 --k 2 --out k.h5
expect_usage "koe analyze: --eps 0x1p-3: '0x1p-3' is not a number in [0, 1]" analyze layers --ckpt c.h5 --corpus c --eps 0x1p-3
expect_usage "koe kmeans: --source layer:: expected mfcc, fbank or layer:N" kmeans --corpus c --source layer: --k 2 --out k.h5
# OMP_NUM_THREADS (the first count of "N,M,..."): a bad one is a warning naming it, then 1 thread
for v in 0x4 " 4" 0; do
  OMP_NUM_THREADS=$v "$KOE" features --corpus "$KOE_TMP/cli-none" --kind mfcc --out "$KOE_TMP/cli.h5" 2> "$KOE_TMP/cli.err" && exit 1
  grep -qF "OMP_NUM_THREADS=$v is not a thread count" "$KOE_TMP/cli.err" || { cat "$KOE_TMP/cli.err"; echo "OMP_NUM_THREADS='$v': no warning"; exit 1; }
done
OMP_NUM_THREADS=1,2 "$KOE" features --corpus "$KOE_TMP/cli-none" --kind mfcc --out "$KOE_TMP/cli.h5" 2> "$KOE_TMP/cli.err" && exit 1
! grep -q "OMP_NUM_THREADS" "$KOE_TMP/cli.err" || { cat "$KOE_TMP/cli.err"; echo "OMP_NUM_THREADS=1,2 refused"; exit 1; }
expect_usage "koe prepare: --shard-mb -1: must be greater than 0" prepare --out o --shard-mb -1 in
# unknown flags, missing values and arguments, flags that take no value
expect_usage "koe bench: unknown option '--frobnicate'" bench "$R" --frobnicate 3
expect_usage "koe export: unknown option '--ckpts'" export --ckpts c.h5 --out d
expect_usage "koe analyze: unknown option '--jsn'" analyze labels --corpus c --labels l --jsn
expect_usage "koe export: --out needs a value" export --ckpt c.h5 --out
expect_usage "koe export: --ckpt CKPT.h5 is required" export --out d
expect_usage "koe train: missing RECIPE.ini" train
expect_usage "koe info: unexpected argument 'b'" info a b
expect_usage "koe prepare: --force takes no value" prepare --out o --force=yes in
expect_usage "koe analyze: expected \`koe analyze layers|codebook|labels ...\`" analyze phones --corpus c --labels l
# --flag=value is the same as --flag value
expect_usage "koe bench: --batch 0: must be between" bench "$R" --batch=0

# The version: `git describe` of the tree the binary was built from (VERSION-gHASH without a tag), or
# the VERSION file.
v=$("$KOE" --version)
[ "$v" = "$("$KOE" version)" ] || { echo "koe --version and koe version differ"; exit 1; }
if git -C "$KOE_ROOT" rev-parse --git-dir > /dev/null 2>&1 && [ -e "$KOE_ROOT/.git" ]; then
  want="koe $(git -C "$KOE_ROOT" describe --tags 2>/dev/null ||
              echo "$(cat "$KOE_ROOT/VERSION")-g$(git -C "$KOE_ROOT" describe --always)")"
  [[ $v == "$want" || $v == "$want-dirty" ]] || { echo "koe --version says '$v', git describe '$want' (rebuild?)"; exit 1; }
else
  [ "$v" = "koe $(cat "$KOE_ROOT/VERSION")" ] || { echo "koe --version says '$v', VERSION has $(cat "$KOE_ROOT/VERSION")"; exit 1; }
fi
grep -q "koe --version" <<<"$out" || { echo "koe help does not mention koe --version"; exit 1; }
echo ok

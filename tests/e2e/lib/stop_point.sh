# tests/e2e/lib/stop_point.sh — sourced by the tests that stop a command at a KOE_TEST_STOP_AT_OUTPUT
# point (core/common.c: the process stops itself with SIGSTOP there) and then kill or resume it.
# stopped PID ERRFILE WHAT: wait up to 30 s for PID to be stopped; if it ended or never stopped, show
# ERRFILE and fail naming WHAT.
stopped() {
  local pid=$1 err=$2 what=$3 st=
  for _ in $(seq 600); do
    st=$(awk '{ print $3 }' /proc/"$pid"/stat 2> /dev/null || echo gone)
    [ "$st" = T ] || [ "$st" = gone ] || [ "$st" = Z ] && break
    sleep 0.05
  done
  [ "$st" = T ] || { cat "$err"; echo "FAIL: $what (state $st)"; exit 1; }
}

# killed_at POINT ERRFILE WHAT CMD...: CMD (its stderr in ERRFILE) stopped at POINT (N, N:data or
# N:published), then killed with kill -9; fails naming WHAT if it never gets there.
killed_at() {
  local point=$1 err=$2 what=$3
  shift 3
  KOE_TEST_STOP_AT_OUTPUT=$point "$@" > /dev/null 2> "$err" &
  local pid=$!
  stopped $pid "$err" "$what"
  kill -9 $pid
  wait $pid 2> /dev/null || true
}

# refused WHAT WHY CMD...: CMD must exit 1 (a refusal, not a crash), saying WHY (a grep regular
# expression) on stderr; prints the line that says it.
refused() {
  local what=$1 why=$2 rc=0
  shift 2
  "$@" > /dev/null 2> refused.err || rc=$?
  [ $rc = 1 ] || { cat refused.err; echo "FAIL: $what: exit $rc, want 1"; exit 1; }
  grep -q "$why" refused.err || { cat refused.err; echo "FAIL: $what: refused, but not because '$why'"; exit 1; }
  echo "    refused $what: $(grep -m1 -o "$why.*" refused.err | head -c 240)"
}

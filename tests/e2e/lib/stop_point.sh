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

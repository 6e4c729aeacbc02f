#!/usr/bin/env bash
# cluster.sh — a real single-node Slurm on localhost, for tests (munged, slurmctld, slurmd from
# Debian's munge and slurm-wlm packages; `make deps` installs them).
#   tests/slurm/cluster.sh start    write the config, start munged, slurmctld, slurmd; wait for the node
#   tests/slurm/cluster.sh env      print `export SLURM_CONF=...` for sbatch/squeue/scontrol (eval it)
#   tests/slurm/cluster.sh stop     cancel the cluster's jobs, stop the daemons this script started (pid files)
# Everything lives in $KOE_SLURM_DIR (default /tmp/koe-slurm-$UID): its own munge key and socket,
# slurm.conf, spool, state and logs. It does not touch /etc/munge, /etc/slurm or a system Slurm:
# the ports are $KOE_SLURM_PORT and $KOE_SLURM_PORT+1 (default 16817, 16818). Needs root (slurmd
# runs jobs as their users; munged runs as the munge user). Jobs run as the submitting user.
# It must not: kill anything it did not start, or leave daemons behind after `stop`.
set -euo pipefail
DIR=${KOE_SLURM_DIR:-/tmp/koe-slurm-$(id -u)}
PORT=${KOE_SLURM_PORT:-16817}
CONF=$DIR/etc/slurm.conf
die() { echo "cluster.sh: $*" >&2; exit 1; }

# ---- stop: each daemon by its pid file, newest first; wait until it is gone -----------------------
stop_one() { # NAME PIDFILE
  local pidf=$2 pid i
  [ -s "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster.sh: $1 (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidf"
}
stop() {
  [ -d "$DIR" ] || return 0
  # jobs first: their processes (slurmstepd and below) would outlive slurmd
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    local i
    SLURM_CONF=$CONF scancel --quiet --partition=debug 2>/dev/null || true
    for i in $(seq 150); do
      [ -z "$(SLURM_CONF=$CONF squeue -h -t RUNNING,COMPLETING,CONFIGURING 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_one slurmd "$DIR/run/slurmd.pid"
  stop_one slurmctld "$DIR/run/slurmctld.pid"
  stop_one munged "$DIR/munge/munged.pid"
}

# ---- start ---------------------------------------------------------------------------------------
start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd and munged); run it as root"
  local b
  for b in /usr/sbin/mungekey /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd sinfo sbatch scontrol; do
    command -v "$b" >/dev/null || die "$b not found: install the Debian packages munge slurm-wlm slurm-client (make deps)"
  done
  id munge >/dev/null 2>&1 || die "no 'munge' user: install the Debian package munge (make deps)"
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    die "a cluster from $DIR is already running (tests/slurm/cluster.sh stop first)"
  fi
  stop
  rm -rf "$DIR"
  # munged checks that its directories are not writable by others: the munge dir is the munge
  # user's, mode 755 (root's sbatch/slurmctld reach the socket; other users may too).
  mkdir -p "$DIR"/{etc,run,log,spool/ctld,spool/d,munge}
  chmod 755 "$DIR" "$DIR/etc" "$DIR/run" "$DIR/log" "$DIR/spool"
  chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"
  /usr/sbin/mungekey -c -k "$DIR/munge/munge.key" >/dev/null
  chown munge:munge "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"
  local sock=$DIR/munge/munge.socket
  runuser -u munge -- /usr/sbin/munged --socket="$sock" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start; its log: $DIR/munge/munged.log"

  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) # nproc obeys OMP_NUM_THREADS otherwise
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  mem_mb=$(( mem_mb * 8 / 10 )); [ "$mem_mb" -ge 64 ] || mem_mb=64
  cat >"$CONF" <<EOF
# slurm.conf for koe's single-node test cluster (written by tests/slurm/cluster.sh)
ClusterName=koetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=10
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  export SLURM_CONF=$CONF
  /usr/sbin/slurmctld -i || die "slurmctld did not start; its log: $DIR/log/slurmctld.log"
  /usr/sbin/slurmd || die "slurmd did not start; its log: $DIR/log/slurmd.log"
  local i state=""
  for i in $(seq 300); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null || true)
    case $state in idle*) break ;; esac
    sleep 0.2
  done
  case $state in
    idle*) echo "cluster.sh: Slurm up on $host ($cpus CPUs, partition debug); eval \"\$($0 env)\"" ;;
    *) echo "cluster.sh: node $host not idle after 60 s (state '${state:-none}'); last log lines:" >&2
       tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
       stop; exit 1 ;;
  esac
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) sed -n '2,5p' "$0" >&2; exit 1 ;;
esac

#!/usr/bin/env bash
# A single-node SLURM on this machine, for tests and for developers trying the slurm backend.
#
#   local/slurm_local.sh install          apt-get install slurm-wlm munge (idempotent; needs root)
#   local/slurm_local.sh start DIR [CPUS] start munged, slurmctld and slurmd with their state in DIR
#   local/slurm_local.sh stop DIR         stop the daemons started in DIR (by their PIDs), keep DIR
#   local/slurm_local.sh env DIR          print the export line clients need: SLURM_CONF=DIR/slurm.conf
#
# Everything lives in DIR: its own munge key and socket, slurm.conf with free TCP ports, spool and
# state directories, daemon logs and PID files. Several clusters (test workers) can run side by side
# and none touches a system munged or slurmd. Daemons run in the foreground under setsid, so the
# PIDs in DIR/*.pid are theirs and `stop` kills exactly those. Accounting is off (no slurmdbd), so
# `sacct` does not work; the job runner does not need it. Layout as in ENVIRONMENT.md.
set -euo pipefail

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

install_slurm() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        die "SLURM is not installed and this is not root on Debian/Ubuntu: run 'sudo apt-get install -y slurm-wlm munge' and rerun"
    fi
    # one installer at a time: two test workers may bring up their clusters together on a fresh machine
    (
        flock 9
        command -v sbatch >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && exit 0
        echo "slurm_local.sh: installing slurm-wlm munge" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
    ) 9>/tmp/espnet2_ext_slurm_install.lock || die "apt-get install slurm-wlm munge failed"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${limit} s; see the logs in $dir"
}

start_daemon() {  # start_daemon NAME COMMAND...: run in the foreground in its own session, record the PID
    local name=$1
    shift
    setsid "$@" >"$dir/$name.out" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "starting slurmd needs root (it runs jobs as their submitting user)"
    install_slurm
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(<"$dir/slurmctld.pid")" 2>/dev/null; then
        echo "slurm_local.sh: already running in $dir" >&2
        return 0
    fi
    local cpus=${cpus:-$(nproc)}
    mkdir -p "$dir/munge" "$dir/spool/ctld" "$dir/spool/d" "$dir/log"
    chmod 700 "$dir/munge"
    if [ ! -f "$dir/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$dir/munge/munge.key"
        chmod 400 "$dir/munge/munge.key"
    fi
    # munged runs as root (--force): DIR may lie under a root-only directory (pytest's tmp dirs)
    # that the munge user cannot enter; the key is this cluster's own, used by nothing else.
    start_daemon munged munged --foreground --force --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munged.seed" --log-file="$dir/munge/munged.log"
    wait_for 10 munged test -S "$dir/munge/munge.socket"

    local ctld_port d_port
    ctld_port=$(free_port)
    d_port=$(free_port)
    while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
    cat >"$dir/slurm.conf.tmp" <<EOF
# written by local/slurm_local.sh: a single-node cluster for tests and development
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# test-sized latency: schedule right after submissions and task ends, not on a 3 s cadence
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
MaxArraySize=10001
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
    export SLURM_CONF=$dir/slurm.conf
    start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
    wait_for 30 slurmctld scontrol ping
    start_daemon slurmd slurmd -D -f "$SLURM_CONF" -N localhost
    wait_for 30 "the node" bash -c '[[ $(sinfo -h -n localhost -o %T) =~ ^(idle|mixed|allocated) ]]'
    echo "slurm_local.sh: SLURM up in $dir ($cpus CPUs); clients need: export SLURM_CONF=$SLURM_CONF" >&2
}

stop() {
    local name pid i
    for name in slurmd slurmctld munged; do
        [ -f "$dir/$name.pid" ] || continue
        pid=$(<"$dir/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
    echo "slurm_local.sh: stopped the daemons of $dir" >&2
}

cmd=${1:-}
case $cmd in
    install) install_slurm ;;
    start) [ $# -ge 2 ] || die "usage: $0 start DIR [CPUS]"; dir=$2; cpus=${3:-}; start ;;
    stop) [ $# -ge 2 ] || die "usage: $0 stop DIR"; dir=$2; stop ;;
    env) [ $# -ge 2 ] || die "usage: $0 env DIR"; echo "export SLURM_CONF=$(cd "$2" && pwd)/slurm.conf" ;;
    *) die "usage: $0 install | start DIR [CPUS] | stop DIR | env DIR" ;;
esac

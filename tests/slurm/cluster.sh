#!/usr/bin/env bash
# A real single-node SLURM for the test suite (make test-slurm), from Debian's packages.
#
#   tests/slurm/cluster.sh install   # apt-get install munge slurmctld slurmd slurm-client (root)
#   tests/slurm/cluster.sh start     # start munged, slurmctld, slurmd; wait for the node
#   tests/slurm/cluster.sh stop      # cancel jobs, stop the daemons, restore /etc/slurm
#
# No systemd: the daemons are started directly. State, spool, logs and pid files live under
# $DUALPET_SLURM_DIR (default /tmp/dualpet-slurm). The configuration is written to
# /etc/slurm/slurm.conf (any existing one is kept aside and restored by `stop`): job steps
# (srun inside a job) drop SLURM_CONF and find the configuration only at that default path.
# No accounting database: job status must come from squeue, so MinJobAge keeps finished
# jobs visible well beyond three status-check intervals.
set -euo pipefail

DIR="${DUALPET_SLURM_DIR:-/tmp/dualpet-slurm}"
CONF=/etc/slurm/slurm.conf
MIN_JOB_AGE=300

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "cluster.sh: $1 needs root (it starts system daemons as on a cluster node)" >&2
        exit 1
    fi
}

install() {
    need_root install
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            munge slurmctld slurmd slurm-client
    fi
}

wait_for() { # seconds, description, command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "cluster.sh: $what did not come up within ${seconds} s; logs in $DIR/log" >&2
    tail -n 20 "$DIR"/log/*.log "$DIR"/munge/*.log >&2 || true
    return 1
}

start() {
    need_root start
    install
    stop_daemons quiet
    mkdir -p "$DIR"/{state,spool,log,munge}
    chown munge:munge "$DIR/munge"
    # munge: a fresh key for this cluster; munged runs as its own user
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$DIR/munge/munge.key"
    chmod 0400 "$DIR/munge/munge.key"
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 munged munge -n

    local node
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
    local host=${node#NodeName=}
    host=${host%% *}
    if [ -f "$CONF" ] && [ ! -f "$DIR/slurm.conf.saved" ] && ! grep -q "^# dualpet test cluster" "$CONF"; then
        cp -p "$CONF" "$DIR/slurm.conf.saved"
    fi
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
# dualpet test cluster (tests/slurm/cluster.sh); restored by 'cluster.sh stop'
ClusterName=dualpet
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
MpiDefault=none
$node State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    slurmctld -c
    wait_for 20 slurmctld scontrol ping
    slurmd
    wait_for 30 "the node" bash -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
    echo "cluster.sh: single-node SLURM up ($node); state in $DIR"
}

stop_daemons() {
    local quiet=${1:-}
    if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
        scancel --full --quiet --user "$(id -un)" || true
    fi
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
        sleep 0.2
    done
    pkill -x slurmstepd 2>/dev/null || true
    [ -n "$quiet" ] || echo "cluster.sh: daemons stopped"
}

stop() {
    need_root stop
    stop_daemons
    if [ -f "$DIR/slurm.conf.saved" ]; then
        mv "$DIR/slurm.conf.saved" "$CONF"
    elif [ -f "$CONF" ] && grep -q "^# dualpet test cluster" "$CONF"; then
        rm -f "$CONF"
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 install|start|stop" >&2
        exit 2
        ;;
esac

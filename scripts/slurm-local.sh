#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying the cluster profile and for CI's integration
# test (tests/integration/test_slurm_run.py). Debian's Slurm packages, no systemd, no accounting
# daemon, every daemon bound to 127.0.0.1. Idempotent: `up` on a running cluster only checks it.
#
#   scripts/slurm-local.sh up       install (apt, as root) if missing, configure, start, wait until idle
#   scripts/slurm-local.sh down     stop the daemons by their pid files (queued jobs are cancelled first)
#   scripts/slurm-local.sh status   print the node's state, exit 1 when the cluster is not up
#
# The node offers this machine's CPUs and (a little less than) its memory; override with
# SLURM_LOCAL_CPUS and SLURM_LOCAL_MEM_MB. State, logs and pid files live under SLURM_LOCAL_STATE
# (default /var/lib/grail-sim-slurm); the configuration is written to /etc/slurm/slurm.conf, which
# is where Debian's client commands read it.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/lib/grail-sim-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
PACKAGES=(munge slurmctld slurmd slurm-client)

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"; }

alive() {  # alive PIDFILE: the pid in the file is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (Debian packages)"
    # The packages' maintainer scripts would try to start the daemons through init: forbid that
    # while installing (exit 101 = action not allowed); this script starts them itself.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    # An old or empty package list (a fresh machine) needs `apt-get update` first.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

write_config() {
    local cpus mem_mb
    cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
    # RealMemory must not exceed what slurmd measures, or the node is drained: leave 5% aside.
    mem_mb=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)}
    mkdir -p "$CONF_DIR" "$STATE"/{ctld,d,log,run}
    chown -R slurm:slurm "$STATE"/ctld 2>/dev/null || true
    local tmp
    tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
    cat > "$tmp" <<EOF
# Written by grail-sim's scripts/slurm-local.sh: a one-node cluster on 127.0.0.1, no accounting.
ClusterName=grailsim
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Without accounting, a finished job is in slurmctld's records for MinJobAge only: the job completion
# log keeps every job's id, name, state and times (read by tests/integration/test_slurm_run.py).
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# The executor plugin forgets a job it cannot see for 120 s: finished jobs stay visible to squeue longer.
MinJobAge=300
ReturnToService=2
SlurmdTimeout=120
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    mv "$tmp" "$CONF"
}

start_munge() {
    local pidfile=/run/munge/munged.pid
    alive "$pidfile" && return 0
    mkdir -p /run/munge && chown munge:munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
        chown munge:munge /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged --pid-file="$pidfile" || die "munged did not start"
}

start_daemon() {  # start_daemon NAME PIDFILE ARGS...: start unless its pid file names a live process
    local name=$1 pidfile=$2
    shift 2
    alive "$pidfile" && return 0
    rm -f "$pidfile"
    "/usr/sbin/$name" "$@" || die "$name did not start; see $STATE/log/$name.log"
}

wait_ready() {
    local deadline=$((SECONDS + ${SLURM_LOCAL_TIMEOUT:-60})) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
        case "$state" in
            idle|mixed|allocated|completing) return 0 ;;
            drain*|down*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    die "the node did not become ready within ${SLURM_LOCAL_TIMEOUT:-60}s (state: ${state:-no answer}); see $STATE/log/"
}

up() {
    need_root
    local started=$SECONDS
    install_packages
    write_config
    start_munge
    start_daemon slurmctld "$STATE/run/slurmctld.pid"
    start_daemon slurmd "$STATE/run/slurmd.pid" -N localhost
    wait_ready
    log "up in $((SECONDS - started))s: $(sinfo -h -N -o '%N %T cpus=%c mem=%mMB')"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, wait, SIGKILL; remove the pid file
    local name=$1 pidfile=$2 pid
    if ! alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"  # slurmctld cannot remove its own (it has dropped the rights by then)
    log "stopped $name (pid $pid)"
}

down() {
    need_root
    if alive "$STATE/run/slurmctld.pid"; then
        scancel --full --quiet --user=root 2>/dev/null || true
        scancel --quiet --state=PENDING 2>/dev/null || true
    fi
    stop_pidfile slurmd "$STATE/run/slurmd.pid"
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile munged /run/munge/munged.pid
}

status() {
    alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" || { log "not running"; exit 1; }
    sinfo -N -o '%N %T cpus=%c mem=%mMB'
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

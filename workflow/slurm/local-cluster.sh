#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost, for testing the experiment grid's SLURM path
# (snakemake --executor slurm) on a laptop or CI machine without a cluster.
#
#   workflow/slurm/local-cluster.sh start    # install if needed, configure, start, wait until usable
#   workflow/slurm/local-cluster.sh status   # what runs; exit 0 only when the cluster is usable
#   workflow/slurm/local-cluster.sh stop     # cancel jobs, stop the daemons this script started
#
# Everything it writes (slurm.conf, state, spool, logs, pid files) lives under one folder of the
# repository, build/slurm/ (override with ADAQPACKNET_SLURM_DIR), except two things that cannot:
# the symlink /etc/slurm/slurm.conf -> build/slurm/slurm.conf and munged's socket in /run/munge.
# `start` needs root (apt-get, the /etc link, running munged as the munge user).
#
# Tested with Debian 12's slurm-wlm 22.05.8 and munge 0.5.15, as root, without systemd or cgroups.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${ADAQPACKNET_SLURM_DIR:-$ROOT/build/slurm}"
CONF="$STATE/slurm.conf"
LOGS="$STATE/log"
RUN="$STATE/run"
MUNGE_DIR="$STATE/munge"
# Bounded wait for the node to become idle and a job step to run (seconds).
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-30}"
# The system path, not $SLURM_CONF: snakemake's job step (snakemake-executor-plugin-slurm-jobstep)
# drops every SLURM_* variable before its inner srun, which then only finds this path
# (otherwise jobs fail with "fetch_config: DNS SRV lookup failed").
ETC_CONF=/etc/slurm/slurm.conf
# The node's name in slurm.conf. The machine's hostname may be anything (containers: random),
# so slurmd is started with -N localhost and reached over loopback.
NODE=localhost
PARTITION=debug

die() {
    echo "local-cluster: error: $*" >&2
    exit 1
}
say() { echo "local-cluster: $*"; }

# The last lines of a log, to put the cause next to the error instead of only its path.
log_tail() {
    if [ -f "$1" ]; then
        echo "--- last lines of $1:" >&2
        tail -n 15 "$1" >&2 || true
    fi
}

# Whether a pid is a running process: not gone, and not a zombie (the daemons fork into the
# background, so their parent is PID 1, which may reap a killed one only later).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }  # the fields after "pid (comm) ": the first is the state
    [ "${stat%% *}" != Z ]
}

# pid from a pid file when that process is running and is the named program
# (a stale pid file may name a recycled pid that belongs to something else).
live_pid() {
    local pidfile=$1 name=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    running "$pid" || return 1
    echo "$pid"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_packages() {
    local missing=()
    for cmd in munged mungekey munge unmunge slurmctld slurmd sinfo srun squeue sbatch scancel scontrol; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing ${missing[*]}; run this script as root to install them, or install the Debian packages yourself: apt-get install --no-install-recommends slurm-wlm munge"
    fi
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install slurm-wlm and munge with; install SLURM and MUNGE yourself"
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    # noninteractive: no debconf prompts in CI; no recommends: no mail server, docs, X libraries.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOGS/apt.log" 2>&1 \
        || { log_tail "$LOGS/apt.log"; die "apt-get update failed (log: $LOGS/apt.log)"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$LOGS/apt.log" 2>&1 \
        || { log_tail "$LOGS/apt.log"; die "apt-get install slurm-wlm munge failed (log: $LOGS/apt.log)"; }
}

# slurm.conf for this machine: CPU layout from `slurmd -C`, 90% of its memory (leaves room for the
# daemons and snakemake itself, so slurmd does not drain the node for reporting less than configured).
write_conf() {
    local hw cpus boards sockets cores threads mem tmp
    hw=$(slurmd -C | head -n 1) || die "slurmd -C failed: cannot read this machine's CPU and memory layout"
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs) boards=$(field Boards) sockets=$(field SocketsPerBoard)
    cores=$(field CoresPerSocket) threads=$(field ThreadsPerCore) mem=$(field RealMemory)
    if [ -z "$cpus" ] || [ -z "$mem" ]; then die "could not parse 'slurmd -C' output: $hw"; fi
    tmp=$(mktemp "$STATE/slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Written by workflow/slurm/local-cluster.sh: a one-node test cluster on localhost. Do not edit;
# the script rewrites it. Every path is under $STATE.
ClusterName=adaqpacknet-local
SlurmctldHost=$NODE
# root runs the daemons and the jobs: this is a throwaway cluster for tests, not a shared machine.
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroups in containers: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: no accounting, so no sacct (snakemake must poll squeue: --slurm-status-command squeue).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that went down (e.g. the daemons restarted) comes back by itself once it registers.
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: that is how snakemake learns they finished.
MinJobAge=300
# Quick shutdown of jobs on scancel/stop.
KillWait=5
InactiveLimit=0
StateSaveLocation=$STATE/ctld-state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$((mem * 9 / 10)) State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$CONF"
        chmod 644 "$CONF"
        if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || live_pid "$RUN/slurmd.pid" slurmd >/dev/null; then
            say "warning: slurm.conf changed while the daemons run; run 'stop' then 'start' to apply it"
        fi
    fi
}

link_conf() {
    mkdir -p "$(dirname "$ETC_CONF")"
    if [ -e "$ETC_CONF" ] && [ ! -L "$ETC_CONF" ]; then
        # A real file there belongs to a real installation: never overwrite it.
        die "$ETC_CONF exists and is not a symlink made by this script; move it aside to use the local test cluster"
    fi
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$CONF" ]; then
        local other pidfile pid
        other=$(readlink "$ETC_CONF")
        # Another checkout's cluster still running on it: repointing the link would break its jobs,
        # and our daemons could not bind the same ports anyway.
        pidfile=$(sed -n 's/^SlurmctldPidFile=//p' "$other" 2>/dev/null | head -n 1)
        if [ -n "$pidfile" ] && pid=$(live_pid "$pidfile" slurmctld); then
            die "another local cluster runs from $other (slurmctld pid $pid); stop it first with the local-cluster.sh of that checkout"
        fi
        say "warning: $ETC_CONF pointed to $other; now points to $CONF"
    fi
    ln -sfn "$CONF" "$ETC_CONF"
}

start_munge() {
    if munge_works; then
        # Already running (ours from an earlier start, or the system's): reuse it, never start a second.
        return 0
    fi
    # munged refuses to run as root, and checks that its folders belong to its user.
    mkdir -p /run/munge "$MUNGE_DIR"
    chown munge: /run/munge "$MUNGE_DIR"
    chmod 0755 /run/munge
    chmod 0700 "$MUNGE_DIR"
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>"$LOGS/mungekey.log" \
            || { log_tail "$LOGS/mungekey.log"; die "mungekey could not create /etc/munge/munge.key"; }
        chown munge: /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # --force: start even when a stale socket from a killed munged is left in /run/munge.
    runuser -u munge -- munged --force \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
        || { log_tail "$MUNGE_DIR/munged.log"; die "munged did not start (log: $MUNGE_DIR/munged.log)"; }
    # Remember that this script started it, so `stop` stops only a munged it owns.
    cp "$MUNGE_DIR/munged.pid" "$RUN/munged.pid"
    for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
    log_tail "$MUNGE_DIR/munged.log"
    die "munged started but 'munge -n | unmunge' fails (log: $MUNGE_DIR/munged.log)"
}

# start_daemon NAME ARGS...: start a SLURM daemon unless its pid file names a live one.
start_daemon() {
    local name=$1
    shift
    if live_pid "$RUN/$name.pid" "$name" >/dev/null; then
        return 0
    fi
    rm -f "$RUN/$name.pid"
    # Both daemons fork into the background and write their pid file themselves.
    "$name" -f "$CONF" "$@" >>"$LOGS/$name.stderr" 2>&1 \
        || { log_tail "$LOGS/$name.stderr"; log_tail "$LOGS/$name.log"; die "$name did not start (logs: $LOGS/$name.log, $LOGS/$name.stderr)"; }
    for _ in $(seq 50); do
        live_pid "$RUN/$name.pid" "$name" >/dev/null && return 0
        sleep 0.1
    done
    log_tail "$LOGS/$name.log"
    die "$name exited right after starting (log: $LOGS/$name.log)"
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n 1; }

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT)) state="" resumed=0 name
    while [ $SECONDS -lt $deadline ]; do
        # A daemon that died after forking (e.g. "fatal: ... Address already in use": another
        # slurmctld holds port 6817) would otherwise cost the whole wait; name it at once.
        for name in slurmctld slurmd; do
            if ! live_pid "$RUN/$name.pid" "$name" >/dev/null; then
                log_tail "$LOGS/$name.log"
                die "$name exited after starting; read $LOGS/$name.log (last lines above)"
            fi
        done
        state=$(node_state || true)
        case "$state" in
            idle|mix|alloc)
                # The node is up; a job step proves munge, slurmctld, slurmd and slurmstepd together.
                if timeout 10 srun -p "$PARTITION" -N 1 -n 1 true >"$LOGS/srun-check.log" 2>&1; then
                    say "ready: node $NODE is $state, 'srun true' ran (config $CONF, logs $LOGS/)"
                    return 0
                fi
                ;;
            down*|drain*|drng*|fail*)
                # Left down by an earlier run (e.g. slurmd killed): put it back in service once.
                if [ $resumed -eq 0 ]; then
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        sleep 0.5
    done
    log_tail "$LOGS/slurmctld.log"
    log_tail "$LOGS/slurmd.log"
    log_tail "$LOGS/srun-check.log"
    die "cluster not ready after ${TIMEOUT}s: node $NODE state '${state:-unknown}' (sinfo), or 'srun true' failed; read $LOGS/slurmctld.log, $LOGS/slurmd.log and $LOGS/srun-check.log"
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "start needs root (apt-get, $ETC_CONF, running munged as the munge user); run it with sudo"
    mkdir -p "$STATE" "$LOGS" "$RUN" "$STATE/ctld-state" "$STATE/spool"
    ensure_packages
    write_conf
    link_conf
    start_munge
    # -c: a clean slate (no jobs, no node state) on every real start: after a crash or a kill,
    # the saved state holds jobs that will never finish and would keep CPUs allocated.
    start_daemon slurmctld -c
    # -N: the node is 'localhost' in slurm.conf whatever this machine's hostname is.
    start_daemon slurmd -N "$NODE"
    wait_ready
}

# stop_daemon NAME: TERM the process in its pid file, bounded wait, then KILL.
stop_daemon() {
    local name=$1 pidfile="$RUN/$1.pid" pid
    if pid=$(live_pid "$pidfile" "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            say "warning: $name ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    # Cancel jobs first: their slurmstepd processes outlive slurmd otherwise.
    if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086  # one job id per word
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 40); do
                [ -z "$(squeue -h -t RUNNING,COMPLETING -o %A 2>/dev/null || true)" ] && break
                sleep 0.25
            done
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    # munged only when this script started it (pid copied into $RUN at start).
    stop_daemon munged
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
    say "stopped (state and logs kept in $STATE)"
}

cmd_status() {
    local ok=0 pid name
    for name in slurmctld slurmd; do
        if pid=$(live_pid "$RUN/$name.pid" "$name"); then
            say "$name running (pid $pid)"
        else
            say "$name not running"
            ok=1
        fi
    done
    if pid=$(live_pid "$RUN/munged.pid" munged); then
        say "munged running (pid $pid, started by this script)"
    elif command -v munge >/dev/null && munge_works; then
        say "munged running (not started by this script)"
    else
        say "munged not running"
        ok=1
    fi
    if [ $ok -eq 0 ]; then
        say "node $NODE: $(node_state || echo unknown)"
        sinfo 2>&1 || ok=1
        squeue 2>&1 || true
    fi
    say "config $CONF, logs $LOGS/"
    return $ok
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster on 127.0.0.1 with 2 fake GPUs:
# munged, slurmctld and slurmd run as plain daemons (no systemd), with their
# PID files, logs, state and munge socket under $OCTOPI_SLURM_DIR
# (default /run/octopi-slurm). Writes /etc/slurm/slurm.conf and gres.conf
# (the executor's job steps clear SLURM_CONF, so the config must sit at the
# default path). Stops a cluster started earlier first, wipes all Slurm state,
# and returns once the node is idle with Gres=gpu:2. Needs root and the packages
# from install.sh. See .ci/slurm/README.md.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "start.sh: must run as root (no sudo found)" >&2
    exit 1
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${OCTOPI_SLURM_DIR:-/run/octopi-slurm}
CTLD_PORT=${OCTOPI_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${OCTOPI_SLURM_SLURMD_PORT:-6818}
N_GPUS=2
UP_TIMEOUT=${OCTOPI_SLURM_UP_TIMEOUT:-30}
CONF_DIR=/etc/slurm
MARKER="# Managed by octopi .ci/slurm/start.sh"
MARK="OCTOPI_SLURM_INSTANCE=$DIR"
# Job states stay visible in squeue/scontrol for this long after the job ends;
# the snakemake slurm executor needs >= 3 x slurm-init-seconds-before-status-checks.
MIN_JOB_AGE=${OCTOPI_SLURM_MIN_JOB_AGE:-600}
# Scheduler: Slurm 22.05 starts a submitted job on slurmctld's ~1 s backfill
# tick whatever these say (measured: 0.1-1.0 s after sbatch, same with the
# defaults; 'defer' would make it ~2.7 s). The short intervals only bound the
# worst case when no event triggers a pass (defaults: 60 s / 30 s).
SCHED_PARAMS=${OCTOPI_SLURM_SCHED_PARAMS:-sched_min_interval=0,batch_sched_delay=0,sched_interval=2,bf_interval=1}

log() { echo "start.sh: $*"; }
# an error before anything was started
fail() {
    echo "start.sh: ERROR: $*" >&2
    exit 1
}
# an error once daemons may run: show their logs and stop them again
die() {
    echo "start.sh: ERROR: $*" >&2
    for f in munged slurmctld slurmd; do
        if [[ -s $DIR/log/$f.log ]]; then
            echo "----- tail of $DIR/log/$f.log -----" >&2
            tail -n 25 "$DIR/log/$f.log" >&2
        fi
    done
    # leave nothing half-started behind (logs stay in $DIR/log)
    if [[ -f $HERE/stop.sh ]]; then OCTOPI_SLURM_DIR=$DIR bash "$HERE/stop.sh" --quiet || true; fi
    exit 1
}

[[ $DIR == /?* && $DIR != *[[:space:]]* ]] || fail "OCTOPI_SLURM_DIR must be an absolute path without spaces, not '$DIR'"

trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

for bin in munged slurmctld slurmd sinfo scontrol; do
    command -v "$bin" >/dev/null 2>&1 || fail "'$bin' not found; run .ci/slurm/install.sh first"
done

# Refuse to clobber a slurm.conf this script did not write (a real cluster).
if [[ -e $CONF_DIR/slurm.conf ]] && ! grep -qxF "$MARKER" "$CONF_DIR/slurm.conf"; then
    if [[ ${OCTOPI_SLURM_FORCE:-0} != 1 ]]; then
        fail "$CONF_DIR/slurm.conf exists and was not written by this script; set OCTOPI_SLURM_FORCE=1 to replace it (a backup is kept)"
    fi
    cp -a "$CONF_DIR/slurm.conf" "$CONF_DIR/slurm.conf.bak.$(date +%s)"
fi

# Rerunnable: stop whatever an earlier start left running.
OCTOPI_SLURM_DIR=$DIR bash "$HERE/stop.sh" --quiet || fail "could not stop the running cluster"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CTLD_PORT" "$SLURMD_PORT"; do
    if port_busy "$p"; then
        fail "port $p on 127.0.0.1 is in use by another process (another Slurm?); stop it or set OCTOPI_SLURM_CTLD_PORT/OCTOPI_SLURM_SLURMD_PORT"
    fi
done

# --- directories: state is wiped on every start (a node once INVAL stays DRAIN otherwise)
rm -rf "$DIR/state" "$DIR/munge" "$DIR/log"
mkdir -p "$DIR/state/slurmctld" "$DIR/state/slurmd" "$DIR/munge" "$DIR/log" "$CONF_DIR"
chmod 755 "$DIR"
chown munge:munge "$DIR/munge"
chmod 755 "$DIR/munge"

# --- munge: key + daemon (own socket, so a system munged cannot interfere)
MUNGE_SOCKET=$DIR/munge/munge.socket.2
mkdir -p /etc/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
: >"$DIR/log/munged.log"
chown munge:munge "$DIR/log/munged.log"
runuser -u munge -- env "$MARK" munged \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" ||
    die "munged failed to start"

# --- fake GPU device files: slurmd drops a GPU whose File= is not a character
# device ("Removing file-less GPU"), and then sets no CUDA_VISIBLE_DEVICES
gpu_files=()
fallback_devs=(/dev/null /dev/zero)
for ((i = 0; i < N_GPUS; i++)); do
    dev=/dev/fakegpu$i
    [[ -e $dev && ! -c $dev ]] && rm -f "$dev"
    if [[ ! -c $dev ]]; then
        # a character device like /dev/null; where mknod is not permitted
        # (unprivileged containers) a symlink to an existing one works too
        mknod -m 666 "$dev" c 1 3 2>/dev/null || ln -sfn "${fallback_devs[$i]}" "$dev" ||
            die "cannot create fake GPU device $dev"
    fi
    gpu_files+=("$dev")
done

# --- config
HOST=$(hostname -s)
CPUS=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$((mem_mb - mem_mb / 20)) # a bit under the machine's memory

cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
# Throw-away single-node test cluster; rewritten on every start. Do not edit.
ClusterName=octopi-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=$SCHED_PARAMS
GresTypes=gpu
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=$MIN_JOB_AGE
# jobs without --mem would otherwise get the whole node's memory (CR_Core_Memory)
# and run one at a time; nothing enforces the limit (no cgroups)
DefMemPerCPU=1024
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# no accounting (no slurmdbd, so no sacct); the *Type=none defaults are left
# implicit because newer Slurm releases dropped some of those plugins
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM Gres=gpu:$N_GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

{
    echo "$MARKER"
    for f in "${gpu_files[@]}"; do echo "Name=gpu File=$f"; done
} >"$CONF_DIR/gres.conf"
chmod 644 "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"

# --- daemons (they fork and write their PID files themselves)
# (the marker in their environment lets stop.sh find them even without PID
# files; it finds slurmd's slurmstepds by their open $DIR/log/slurmd.log)
env "$MARK" slurmctld || die "slurmctld failed to start"
env "$MARK" slurmd || die "slurmd failed to start"

# --- wait until the node is idle with both GPUs
deadline=$((SECONDS + UP_TIMEOUT))
state="" node=""
while ((SECONDS < deadline)); do
    state=$(timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    if [[ $state == idle ]]; then
        node=$(timeout 5 scontrol show node "$HOST" 2>/dev/null || true)
        if grep -qE "Gres=gpu:$N_GPUS( |\(|$)" <<<"$node"; then
            log "Slurm $(slurmctld -V | awk '{print $2}') up: node $HOST idle, CPUs=$CPUS RealMemory=${REAL_MEM}M Gres=gpu:$N_GPUS (dir $DIR)"
            exit 0
        fi
    fi
    sleep 0.2
done
echo "start.sh: last sinfo state: '${state:-<no answer>}'" >&2
[[ -n $node ]] && echo "$node" >&2
die "node did not become idle with Gres=gpu:$N_GPUS within ${UP_TIMEOUT}s"

#!/usr/bin/env bash
# Stop the throw-away Slurm cluster started by start.sh: cancel every job,
# then stop slurmd, slurmctld, any leftover slurmstepd/job processes, and munged.
# Only processes of this cluster are touched: the daemons named by the PID
# files in $OCTOPI_SLURM_DIR (default /run/octopi-slurm) and every process that
# carries start.sh's OCTOPI_SLURM_INSTANCE marker in its environment (the
# daemons and the slurmstepds slurmd forks), with their descendants.
# Idempotent, safe when nothing runs, and bounded in time. Logs are kept.
# Usage: stop.sh [--quiet]
set -uo pipefail

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "stop.sh: must run as root (no sudo found)" >&2
    exit 1
fi

DIR=${OCTOPI_SLURM_DIR:-/run/octopi-slurm}
MARK="OCTOPI_SLURM_INSTANCE=$DIR"
QUIET=0
[[ ${1:-} == --quiet ]] && QUIET=1
log() { ((QUIET)) || echo "stop.sh: $*"; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# PID from a PID file, only if that process is alive and has the expected name
# (guards against a stale file and a recycled PID).
pid_from_file() { # file name
    local pid
    [[ -r $1 ]] || return 0
    pid=$(tr -dc '0-9' <"$1")
    if alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]]; then
        echo "$pid"
    fi
}

# PIDs of processes whose environment carries this instance's marker.
marked_pids() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qxF "$MARK"; then
            echo "$pid"
        fi
    done
}

# All descendants of the given PIDs (from /proc, no procps needed).
descendants() {
    local d stat rest ppid pid
    declare -A parent=()
    for d in /proc/[0-9]*; do
        stat=$(cat "$d/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r _ ppid _ <<<"$rest"
        parent[${d#/proc/}]=$ppid
    done
    declare -A want=()
    for pid in "$@"; do want[$pid]=1; done
    local changed=1
    while ((changed)); do
        changed=0
        for pid in "${!parent[@]}"; do
            if [[ -z ${want[$pid]:-} && -n ${want[${parent[$pid]}]:-} ]]; then
                want[$pid]=1
                changed=1
                echo "$pid"
            fi
        done
    done
}

# Send TERM, wait up to $1 seconds, then KILL what is left.
terminate() { # timeout pid...
    local t=$1 pid left
    shift
    local pids=()
    for pid in "$@"; do alive "$pid" && pids+=("$pid"); done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    local end=$((SECONDS + t))
    while ((SECONDS < end)); do
        left=0
        for pid in "${pids[@]}"; do alive "$pid" && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if alive "$pid"; then
            log "PID $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    sleep 0.2
}

ctld=$(pid_from_file "$DIR/slurmctld.pid" slurmctld)
slurmd=$(pid_from_file "$DIR/slurmd.pid" slurmd)
munged=$(pid_from_file "$DIR/munge/munged.pid" munged)

# 1. cancel all jobs while the controller still answers, and wait for them to end
if alive "$ctld" && command -v squeue >/dev/null 2>&1; then
    jobs=$(timeout -k 2 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout -k 2 10 scancel --full $jobs 2>/dev/null
        timeout -k 2 10 scancel $jobs 2>/dev/null # also drops pending ones
        end=$((SECONDS + 20))
        while ((SECONDS < end)); do
            left=$(timeout -k 2 5 squeue -h -o %A 2>/dev/null) || break
            [[ -z $left ]] && break
            sleep 0.3
        done
    fi
fi

# 2. everything of this instance: daemons from PID files + marked processes
#    (slurmstepd and friends) + all their descendants (job processes)
mapfile -t marked < <(marked_pids)
roots=("${marked[@]}")
for p in "$ctld" "$slurmd" "$munged"; do [[ -n $p ]] && roots+=("$p"); done
if ((${#roots[@]} == 0)); then
    log "nothing running"
    rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$DIR/munge/munged.pid"
    exit 0
fi
mapfile -t desc < <(descendants "${roots[@]}")

is_daemon() { [[ $1 == "$ctld" || $1 == "$slurmd" || $1 == "$munged" ]]; }
others=()
for p in "${marked[@]}" "${desc[@]}"; do
    is_daemon "$p" || others+=("$p")
done
# marked daemons whose PID file was lost
for p in "${marked[@]}"; do
    case $(cat "/proc/$p/comm" 2>/dev/null) in
    slurmd*) [[ -z $slurmd ]] && slurmd=$p ;;
    slurmctld*) [[ -z $ctld ]] && ctld=$p ;;
    munged*) [[ -z $munged ]] && munged=$p ;;
    esac
done
others2=()
for p in "${others[@]}"; do is_daemon "$p" || others2+=("$p"); done

log "stopping slurmd=${slurmd:--} slurmctld=${ctld:--} munged=${munged:--} others=${#others2[@]}"
terminate 10 "$slurmd"
terminate 10 "$ctld"
terminate 5 "${others2[@]}"
terminate 5 "$munged"

# 3. verify
mapfile -t still < <(marked_pids)
for p in "$ctld" "$slurmd" "$munged" "${others2[@]}"; do alive "$p" && still+=("$p"); done
rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$DIR/munge/munged.pid"
if ((${#still[@]})); then
    echo "stop.sh: ERROR: processes still alive: ${still[*]}" >&2
    exit 1
fi
log "stopped"

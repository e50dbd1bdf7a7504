#!/usr/bin/env bash
# Stop the throw-away Slurm cluster started by start.sh: cancel every job,
# then stop slurmd, slurmctld, any leftover slurmstepd/job processes, and munged.
# Only processes of this cluster are touched: the daemons named by the PID
# files in $OCTOPI_SLURM_DIR (default /run/octopi-slurm) and every process that
# carries start.sh's OCTOPI_SLURM_INSTANCE marker in its environment, every
# slurmstepd logging into that directory, and all their descendants.
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

# running (a zombie waiting to be reaped counts as gone)
alive() {
    local stat=""
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

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

# PIDs of this instance's processes: those whose environment carries the
# marker (munged, slurmctld, slurmd) and slurmstepds writing to this instance's
# slurmd log (slurmd does not pass its environment on to them).
instance_pids() {
    local f pid comm
    while IFS= read -r f; do
        pid=${f#/proc/}
        echo "${pid%%/*}"
    done < <(grep -lsxFz "$MARK" /proc/[0-9]*/environ)
    for f in /proc/[0-9]*/comm; do
        comm=""
        read -r comm 2>/dev/null <"$f" || continue
        [[ $comm == slurmstepd ]] || continue
        pid=${f#/proc/}
        pid=${pid%%/*}
        if [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$DIR"/* ]] ||
            find "/proc/$pid/fd" -lname "$DIR/*" 2>/dev/null | grep -q .; then
            echo "$pid"
        fi
    done
}

# All descendants of the given PIDs (from /proc, no procps needed).
descendants() {
    local d stat rest ppid pid
    declare -A parent=()
    for d in /proc/[0-9]*; do
        stat=""
        read -r stat 2>/dev/null <"$d/stat" || continue
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
# daemons whose PID file was lost are still found by their marker
mapfile -t found < <(instance_pids)
for p in "${found[@]}"; do
    comm=""
    read -r comm 2>/dev/null <"/proc/$p/comm" || continue
    case $comm in
    slurmctld*) [[ -z $ctld ]] && ctld=$p ;;
    slurmd*) [[ -z $slurmd ]] && slurmd=$p ;;
    munged*) [[ -z $munged ]] && munged=$p ;;
    esac
done

if [[ -z $ctld$slurmd$munged && ${#found[@]} -eq 0 ]]; then
    log "nothing running"
    rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$DIR/munge/munged.pid"
    exit 0
fi

# 1. cancel all jobs while the controller still answers, and wait for them to end
if alive "$ctld" && alive "$munged" && command -v squeue >/dev/null 2>&1; then
    jobs=$(timeout -k 2 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout -k 2 10 scancel $jobs 2>/dev/null
        end=$((SECONDS + 20))
        while ((SECONDS < end)); do
            left=$(timeout -k 2 5 squeue -h -o %A 2>/dev/null) || break
            [[ -z $left ]] && break
            sleep 0.2
        done
    fi
fi

# 2. stop the daemons and whatever else is left of this instance: slurmstepds
#    and every descendant (job processes); all at once, as each daemon takes
#    1-2 s to exit on SIGTERM
mapfile -t found < <(instance_pids)
roots=("${found[@]}")
for p in "$ctld" "$slurmd" "$munged"; do [[ -n $p ]] && roots+=("$p"); done
mapfile -t desc < <(descendants "${roots[@]}")
all=()
declare -A seen=()
for p in "${roots[@]}" "${desc[@]}"; do
    [[ -n ${seen[$p]:-} ]] && continue
    seen[$p]=1
    all+=("$p")
done
log "stopping slurmctld=${ctld:--} slurmd=${slurmd:--} munged=${munged:--} ($((${#all[@]})) processes)"
# a slurmstepd still there lost its job (it ignores SIGTERM): SIGKILL it;
# its job processes get SIGTERM with the rest below
for p in "${all[@]}"; do
    comm=""
    read -r comm 2>/dev/null <"/proc/$p/comm" || continue
    if [[ $comm == slurmstepd ]]; then
        log "killing leftover slurmstepd $p"
        kill -KILL "$p" 2>/dev/null
    fi
done
terminate 10 "${all[@]}"

# 3. verify
mapfile -t still < <(instance_pids)
for p in "${all[@]}"; do alive "$p" && still+=("$p"); done
rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$DIR/munge/munged.pid"
if ((${#still[@]})); then
    echo "stop.sh: ERROR: processes still alive: ${still[*]}" >&2
    exit 1
fi
log "stopped"

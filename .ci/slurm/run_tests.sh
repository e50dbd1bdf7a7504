#!/usr/bin/env bash
# Run the Slurm tests (pytest -m slurm tests/slurm) against the throw-away cluster:
#   1. install the cluster packages (install.sh),
#   2. install the snakemake slurm executor plugin into <venv>/slurm-plugin (not into the
#      venv's site-packages: only the Slurm tests put it on PYTHONPATH, so other Snakemake
#      runs of the venv never load it; see docs/hpc-slurm.md, "start-up trap"),
#   3. start the cluster (start.sh), run pytest,
#   4. ALWAYS (exit, error, Ctrl-C, SIGTERM): kill what the tests left running, stop the
#      cluster (stop.sh cancels every job and stops every daemon) and check that nothing is left.
# Exits with pytest's status (or 1 when the set-up or the clean-up fails).
# Usage: .ci/slurm/run_tests.sh [pytest args...]     (root, or a user with sudo)
# Environment: VENV (default .venv), OCTOPI_SLURM_PLUGIN_DIR (default $VENV/slurm-plugin),
#   OCTOPI_SLURM_PLUGIN_SPEC (the pip requirements of the plugin; default: the tested versions).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=$VENV/bin/python
PLUGIN_DIR=${OCTOPI_SLURM_PLUGIN_DIR:-$VENV/slurm-plugin}
PLUGIN_SPEC=${OCTOPI_SLURM_PLUGIN_SPEC:-snakemake-executor-plugin-slurm==2.8.0 snakemake-executor-plugin-slurm-jobstep==0.6.1}
BASETEMP=$(mktemp -d "${TMPDIR:-/tmp}/octopi-slurm-tests.XXXXXX")
chmod 755 "$BASETEMP" # jobs of a non-root user must reach it too

log() { echo "run_tests.sh: $*"; }

# Processes still using the tests' folder: Snakemake heads (cwd = a study dir) and
# `octopi model-explore` (its --output names the folder). Found by that unique path only.
# (bash builtins only, so that the scan never finds its own helper processes)
leftover_pids() {
    local d pid args
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        args=()
        mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
        if [[ $(readlink "$d/cwd" 2>/dev/null) == "$BASETEMP"* || " ${args[*]} " == *"$BASETEMP"* ]]; then
            echo "$pid"
        fi
    done
}

status=1
cleanup() {
    trap - EXIT INT TERM
    local pids
    mapfile -t pids < <(leftover_pids)
    if ((${#pids[@]})); then
        log "killing processes the tests left: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null
    fi
    if ! bash "$HERE/stop.sh"; then
        log "ERROR: stop.sh failed"
        status=1
    fi
    mapfile -t pids < <(leftover_pids)
    if ((${#pids[@]})); then
        log "ERROR: still running: ${pids[*]}"
        status=1
    fi
    rm -rf "$BASETEMP"
    log "exit status $status"
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; status=130; exit' INT TERM

[[ -x $PYTHON ]] || {
    log "ERROR: $PYTHON not found: run 'make install' first (or set VENV)"
    exit
}

bash "$HERE/install.sh" || {
    log "ERROR: install.sh failed"
    exit
}

if "$PYTHON" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    log "executor plugin: installed in $VENV"
elif [[ -d $PLUGIN_DIR/snakemake_executor_plugin_slurm ]]; then
    log "executor plugin: $PLUGIN_DIR"
else
    log "installing $PLUGIN_SPEC into $PLUGIN_DIR"
    # --no-deps: its dependencies (snakemake interfaces, pandas, numpy, throttler) come
    # from the venv; pip check below proves that they fit
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$PLUGIN_DIR" $PLUGIN_SPEC || {
        log "ERROR: pip install failed"
        rm -rf "$PLUGIN_DIR"
        exit
    }
fi
PYTHONPATH=$PLUGIN_DIR "$PYTHON" -m pip check --disable-pip-version-check || {
    log "ERROR: the executor plugin does not fit the venv (pip check); set OCTOPI_SLURM_PLUGIN_SPEC"
    exit
}

start=$SECONDS
bash "$HERE/start.sh" || {
    log "ERROR: start.sh failed"
    exit
}
log "cluster up in $((SECONDS - start)) s"

cd "$ROOT" || exit
start=$SECONDS
# in the background, so that a signal to this script is handled at once (bash runs traps
# only after a foreground command ends); the clean-up kills pytest by its --basetemp
OCTOPI_SLURM_PLUGIN_DIR=$PLUGIN_DIR "$PYTHON" -m pytest -m slurm tests/slurm \
    --basetemp="$BASETEMP/pytest" -p no:cacheprovider -rA --durations=0 "$@" &
wait $!
status=$?
log "pytest status $status after $((SECONDS - start)) s"
exit

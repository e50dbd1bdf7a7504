#!/usr/bin/env bash
# GPU check: the CUDA path run for real on a machine with an NVIDIA GPU, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh                  # from a checkout of the repository
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh  # rehearsal on a CPU: toy sizes, no GPU needed
#   GPU_CHECK_PYTHON=python3 bash benchmarks/gpu_check.sh  # a Python that has CUDA torch already
#
# GPU_CHECK_PYTHON: the Python to use instead of .venv/bin/python (which `make install` makes):
# e.g. a cluster's module or container Python with a CUDA build of torch, our other dependencies
# importable (PYTHONPATH may add them and this checkout's src/). Nothing is installed then.
#
# Steps, each under `timeout`, all within GPU_CHECK_BUDGET seconds (default 460; dry run 900),
# GPU_CHECK_BENCH_MIN of them (default 240) kept for step 4:
#   1. nvidia-smi; `make install TORCH_BACKEND=auto` when .venv is missing (the CUDA build of
#      torch that the driver supports); the torch/CUDA versions and the GPUs torch sees.
#   2. octopi 1.7.0's environment (benchmarks/.envs/octopi-1.7.0): used when installed, else
#      installed in the background during step 3 if that ends in time (GPU_CHECK_PUBLISHED=skip:
#      never; an install cut short is removed); without it the benchmark measures ours alone
#      (--ours-only). For the comparison, run `.venv/bin/python -m benchmarks install` first.
#   3. pytest -m gpu tests/gpu: fails loudly when every test was skipped (no GPU visible).
#   4. python -m benchmarks run --suite gpu --phases throughput,inference --time-limit S:
#      training patches/s (crop 96, batch 16) and inference seconds per CZII-size tomogram
#      (184×630×630), into benchmarks/results/{gpu-<stamp>,latest-gpu}.json and the
#      `benchmarks:gpu` block of docs/benchmarks.md.
#   5. the summary: benchmarks/results/gpu-check-<stamp>.json (step times, versions, test
#      counts, figures). Logs and scratch: benchmarks/work/gpu-check/<stamp>/.
# A dry run uses the gpu-dry suite, leaves docs/ alone and keeps every output, summary
# included, in its scratch folder. Exit status 0 when every step passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DRY=${GPU_CHECK_DRY:-0}
if [[ $DRY == 1 ]]; then
    BUDGET=${GPU_CHECK_BUDGET:-900}
    SUITE=gpu-dry
    PUBLISHED_INSTALL_CAP=20 # enough to exercise the path; a real install takes minutes
else
    BUDGET=${GPU_CHECK_BUDGET:-460}
    SUITE=gpu
    PUBLISHED_INSTALL_CAP=240
fi
BENCH_MIN=${GPU_CHECK_BENCH_MIN:-240} # seconds kept for the benchmark after the tests
PY=${GPU_CHECK_PYTHON:-.venv/bin/python}
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=benchmarks/work/gpu-check/$STAMP
RESULTS=benchmarks/results
SUMMARY=$RESULTS/gpu-check-$STAMP.json
RESULT_FILE=$RESULTS/latest-$SUITE.json
[[ $DRY == 1 ]] && SUMMARY=$WORK/gpu-check-dry.json
mkdir -p "$WORK" "$RESULTS"
STEPS=$WORK/steps.tsv
: >"$STEPS"
STARTED=$(date +%s)
START=$SECONDS
FAILED=0
PUB_PID=
PUB_ENV=benchmarks/.envs/octopi-1.7.0
ALLOW_SKIPPED=() # a dry run has no GPU: its GPU tests all skip
[[ $DRY == 1 ]] && ALLOW_SKIPPED=(--allow-skipped)

left() { echo $((BUDGET - (SECONDS - START))); }

# limit CAP [RESERVE]: seconds a step may take: CAP, or less to keep RESERVE seconds after it.
limit() {
    local cap=$1 room=$(($(left) - ${2:-20}))
    ((room < cap)) && cap=$room
    ((cap < 1)) && cap=1
    echo "$cap"
}

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STEPS"; }

# step NAME SECONDS COMMAND...: run COMMAND under timeout; record its status and duration.
step() {
    local name=$1 seconds=$2 t0=$SECONDS rc=0 status=ok
    shift 2
    echo "== $name (limit ${seconds} s; $(left) s of ${BUDGET} s left)"
    timeout --kill-after=10 "$seconds" "$@" || rc=$?
    if ((rc == 124 || rc == 137)); then
        status=timeout
    elif ((rc != 0)); then
        status="failed (exit $rc)"
    fi
    record "$name" "$status" $((SECONDS - t0))
    echo "== $name: $status in $((SECONDS - t0)) s"
    return "$rc"
}

# write_summary: the summary JSON; fails when it lists problems (see benchmarks/gpu_check.py).
write_summary() {
    local rc=0
    command -v "$PY" >/dev/null || return 1
    timeout 60 "$PY" -m benchmarks.gpu_check summary --steps "$STEPS" --env "$WORK/env.json" \
        --tests "$WORK/gpu-tests.xml" --results "$RESULT_FILE" --started "$STARTED" \
        --budget "$BUDGET" --out "$SUMMARY" "${ALLOW_SKIPPED[@]}" || rc=$?
    echo "summary: $SUMMARY ($((SECONDS - START)) s in all)"
    return "$rc"
}

# drop_partial_published_env: an install cut short leaves a venv without its stamp, which
# tests/unit/test_docs.py would take for a working one; the next run starts it over.
drop_partial_published_env() {
    if [[ -d $PUB_ENV && ! -f $PUB_ENV/.installed.json ]]; then rm -rf "$PUB_ENV"; fi
}

die() {
    echo "GPU CHECK FAILED: $*" >&2
    if [[ -n $PUB_PID ]]; then
        kill "$PUB_PID" 2>/dev/null || true
        wait "$PUB_PID" 2>/dev/null || true
        drop_partial_published_env
    fi
    write_summary || true
    exit 1
}

# ---------------------------------------------------------------- 1. driver, venv, versions
if command -v nvidia-smi >/dev/null; then
    step nvidia-smi 30 nvidia-smi || die "nvidia-smi failed: no working NVIDIA driver"
elif [[ $DRY == 1 ]]; then
    record nvidia-smi skipped 0
    echo "== nvidia-smi: not installed (dry run: carrying on)"
else
    die "nvidia-smi not found: run this on a machine with an NVIDIA GPU and its driver"
fi

if [[ -n ${GPU_CHECK_PYTHON:-} ]]; then
    command -v "$PY" >/dev/null || die "GPU_CHECK_PYTHON=$PY: no such program"
    record install "skipped (GPU_CHECK_PYTHON)" 0
elif [[ ! -x $PY ]]; then
    step install "$(limit 300 180)" make install TORCH_BACKEND=auto ||
        die "make install TORCH_BACKEND=auto failed (see above)"
fi
REQUIRE_CUDA=(--require-cuda)
[[ $DRY == 1 ]] && REQUIRE_CUDA=()
step versions 120 "$PY" -m benchmarks.gpu_check env --out "$WORK/env.json" "${REQUIRE_CUDA[@]}" ||
    die "torch in .venv sees no CUDA device; a CPU build? rm -rf .venv and rerun this script"

# ---------------------------------------------------------------- 2. octopi 1.7.0, in the background
OURS_ONLY=(--ours-only)
PUB_LIMIT=$(limit "$PUBLISHED_INSTALL_CAP" "$BENCH_MIN")
if [[ -f $PUB_ENV/.installed.json ]]; then
    OURS_ONLY=()
    record published-env ok 0
elif [[ ${GPU_CHECK_PUBLISHED:-auto} == skip ]] || ((PUB_LIMIT < 15)); then
    record published-env skipped 0
    echo "== octopi 1.7.0 is not installed (no time to install it): measuring ours alone"
else
    echo "== installing octopi 1.7.0 in the background (limit $PUB_LIMIT s; log in $WORK)"
    timeout --kill-after=10 "$PUB_LIMIT" "$PY" -m benchmarks install \
        >"$WORK/published-install.log" 2>&1 &
    PUB_PID=$!
    PUB_T0=$SECONDS
fi

# ---------------------------------------------------------------- 3. the GPU tests
step gpu-tests "$(limit 240 "$BENCH_MIN")" "$PY" -m pytest -m gpu tests/gpu -q -rs \
    --junitxml="$WORK/gpu-tests.xml" || FAILED=1
rc=0
"$PY" -m benchmarks.gpu_check tests "$WORK/gpu-tests.xml" "${ALLOW_SKIPPED[@]}" || rc=$?
((rc == 2)) && die "no GPU test ran (all skipped, or pytest did not finish): no GPU for torch?"
((rc == 0)) || FAILED=1

if [[ -n $PUB_PID ]]; then
    rc=0
    wait "$PUB_PID" || rc=$?
    PUB_PID=
    if ((rc == 0)); then
        OURS_ONLY=()
        record published-install ok $((SECONDS - PUB_T0))
    else
        record published-install "skipped (install exit $rc)" $((SECONDS - PUB_T0))
        drop_partial_published_env
        echo "== octopi 1.7.0 install did not finish (exit $rc): measuring ours alone"
    fi
fi

# ---------------------------------------------------------------- 4. the benchmark
BENCH_LIMIT=$(limit 600 40)
DOCS=()
[[ $DRY == 1 ]] && DOCS=(--no-docs)
step benchmark $((BENCH_LIMIT + 30)) "$PY" -m benchmarks run --suite "$SUITE" \
    --phases throughput,inference --time-limit "$BENCH_LIMIT" "${OURS_ONLY[@]}" "${DOCS[@]}" ||
    FAILED=1

# ---------------------------------------------------------------- 5. summary
if [[ $DRY == 1 ]]; then # keep the rehearsal's results out of benchmarks/results
    for file in "$RESULTS"/latest-gpu-dry.json "$RESULTS"/gpu-dry-*.json; do
        if [[ -f $file ]]; then mv "$file" "$WORK/"; fi
    done
    RESULT_FILE=$WORK/latest-gpu-dry.json
fi
write_summary || FAILED=1
((FAILED == 0)) || {
    echo "GPU CHECK FAILED: see the steps above and $SUMMARY" >&2
    exit 1
}
echo "GPU check passed"

#!/usr/bin/env bash
# benchmarks/gpu_check.sh on a GPU machine that cannot reach a package index (a cluster node
# behind a firewall, a container) but has a Python with a CUDA build of torch. Everything else
# that the check needs, ours and octopi 1.7.0's, travels as one archive of installed packages,
# packed on a machine that can reach PyPI:
#
#   bash benchmarks/gpu_check_offline.sh pack ARCHIVE [HAVE]   # here: writes ARCHIVE (.tar.xz)
#   bash benchmarks/gpu_check_offline.sh run ARCHIVE           # there: unpacks it, runs the check
#
# pack: the packages of requirements-lock.txt into site/, those of benchmarks/published-lock.txt
#   (octopi 1.7.0's venv) that differ into pub/, as wheels for the target's Python
#   (OFFLINE_PYTHON_VERSION, default 3.12, x86-64 Linux); torch, its CUDA libraries and the
#   developer tools left out (benchmarks/offline_pins.py). HAVE: a file of the package names the
#   target has already (any separators), left out too. Trimmed before packing: MLflow's
#   web UI, botocore's service models other than S3, test folders. About 50 MB.
# run: unpacks ARCHIVE under OFFLINE_DIR (default /tmp/octopi-offline), puts src/ and site/ on
#   PYTHONPATH, makes benchmarks/.envs/octopi-1.7.0 a launcher of pub/ on the same Python (when
#   no real one is installed), and runs gpu_check.sh with GPU_CHECK_PYTHON (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,18p' "$0" >&2
    exit 2
}

pack() {
    local archive=$1 have=${2:-/dev/null} version=${OFFLINE_PYTHON_VERSION:-3.12}
    local scratch
    scratch=$(mktemp -d)
    trap "rm -rf '$scratch'" EXIT # expanded now: the local is gone when the trap runs
    local platforms=(--only-binary=:all: --python-version "$version" --implementation cp)
    local tag
    for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
        manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
        platforms+=(--platform "${tag}_x86_64")
    done
    platforms+=(--platform any)
    # The pins to carry: benchmarks/offline_pins.py says which (ours.txt, published.txt).
    python3 -m benchmarks.offline_pins --have "$have" --out "$scratch"
    local list pin
    for list in ours published; do
        mkdir -p "$scratch/$list-wheels"
        while read -r pin; do # one by one: a few pins exist as source only (pure Python)
            python3 -m pip download -q --no-deps "${platforms[@]}" -d "$scratch/$list-wheels" \
                "$pin" 2>/dev/null ||
                python3 -m pip wheel -q --no-deps -w "$scratch/$list-wheels" "$pin"
        done <"$scratch/$list.txt"
    done
    local install=(python3 -m pip install -q --no-index --no-deps --no-compile "${platforms[@]}"
        --target)
    "${install[@]}" "$scratch/site" "$scratch"/ours-wheels/*.whl
    "${install[@]}" "$scratch/pub" "$scratch"/published-wheels/*.whl
    rm -rf "$scratch/site/mlflow/server/js"
    find "$scratch/site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 \
        -exec rm -rf {} +
    find "$scratch/site" "$scratch/pub" -type d \( -name tests -o -name __pycache__ \) -prune \
        -exec rm -rf {} +
    tar -C "$scratch" -cJf "$archive" site pub
    echo "$archive: $(du -h "$archive" | cut -f1)"
}

run() {
    local archive=$1 dir=${OFFLINE_DIR:-/tmp/octopi-offline}
    local python=${GPU_CHECK_PYTHON:-python3}
    if [[ ! -f $archive ]]; then
        echo "no archive $archive: make it with \`$0 pack $archive\` where PyPI is reachable" >&2
        exit 1
    fi
    mkdir -p "$dir"
    tar -C "$dir" -xJf "$archive"
    export PYTHONPATH="$PWD/src:$dir/site${PYTHONPATH:+:$PYTHONPATH}"
    local env=benchmarks/.envs/octopi-1.7.0
    if [[ -d $dir/pub && ! -f $env/.installed.json ]]; then
        mkdir -p "$env/bin"
        local path="$dir/pub:$dir/site"
        printf '#!/bin/sh\nPYTHONPATH=%s exec %s "$@"\n' "$path" "$(command -v "$python")" \
            >"$env/bin/python"
        printf '#!/bin/sh\nexec %s -c %s "$@"\n' "$PWD/$env/bin/python" \
            "'import sys; from octopi.main import routines; sys.argv[0] = \"octopi\"; sys.exit(routines())'" \
            >"$env/bin/octopi"
        chmod +x "$env/bin/python" "$env/bin/octopi"
        printf '{"install_seconds": 0, "python": "%s", "from": "%s"}\n' \
            "$("$python" -c 'import sys; print(sys.version.split()[0])')" "$archive" \
            >"$env/.installed.json"
    fi
    GPU_CHECK_PYTHON=$python bash benchmarks/gpu_check.sh
}

case ${1:-} in
pack) (($# >= 2)) || usage && pack "${@:2}" ;;
run) (($# == 2)) || usage && run "$2" ;;
*) usage ;;
esac

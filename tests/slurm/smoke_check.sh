#!/usr/bin/env bash
# Smoke check for the throw-away Slurm cluster of .ci/slurm/start.sh (not pytest).
# Submits 3 jobs with sbatch, each asking --gpus=1 --cpus-per-task=1 --mem=100M;
# each records CUDA_VISIBLE_DEVICES, SLURM_JOB_ID and start/end times and sleeps.
# Checks: all 3 complete; at most 2 run at once and 2 do run at once; every job
# saw CUDA_VISIBLE_DEVICES in {0,1}; overlapping jobs saw different devices;
# the finished jobs are still shown by squeue and `scontrol show job` (no sacct).
# Prints the sbatch -> job start latency. Exits non-zero on any failure.
# Usage: tests/slurm/smoke_check.sh   (cluster must be running)
set -euo pipefail

N_JOBS=3
SLEEP_S=${SMOKE_SLEEP_S:-3}
WAIT_S=${SMOKE_WAIT_S:-120}

fail() {
    echo "smoke_check: FAIL: $*" >&2
    exit 1
}
now() { date +%s.%N; }

for bin in sbatch squeue scontrol sinfo; do
    command -v "$bin" >/dev/null 2>&1 || fail "'$bin' not found (run .ci/slurm/install.sh)"
done
timeout 10 scontrol ping >/dev/null 2>&1 || fail "no Slurm controller answers (run .ci/slurm/start.sh)"

work=$(mktemp -d "${TMPDIR:-/tmp}/octopi-slurm-smoke.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

cat >"$work/job.sh" <<'EOF'
#!/bin/bash
out=$1
echo "start=$(date +%s.%N)" >"$out.tmp"
echo "cuda=${CUDA_VISIBLE_DEVICES-<unset>}" >>"$out.tmp"
echo "jobid=${SLURM_JOB_ID-<unset>}" >>"$out.tmp"
sleep "$2"
echo "end=$(date +%s.%N)" >>"$out.tmp"
mv "$out.tmp" "$out"
EOF
chmod 755 "$work/job.sh"

ids=()
declare -A submitted=()
for ((i = 0; i < N_JOBS; i++)); do
    t=$(now)
    id=$(sbatch --parsable --job-name="smoke$i" --gpus=1 --cpus-per-task=1 --mem=100M \
        --chdir="$work" --output="$work/slurm-%j.log" \
        "$work/job.sh" "$work/result$i" "$SLEEP_S") || fail "sbatch failed for job $i"
    id=${id%%;*}
    ids+=("$id")
    submitted[$id]=$t
done
echo "smoke_check: submitted jobs ${ids[*]}"
joined=$(
    IFS=,
    echo "${ids[*]}"
)

# wait until every job has left the pending/running/completing states
deadline=$((SECONDS + WAIT_S))
while :; do
    states=$(squeue -h -t all -j "$joined" -o '%i %T' 2>/dev/null || true)
    active=$(grep -cE ' (PENDING|CONFIGURING|RUNNING|COMPLETING|SUSPENDED)$' <<<"$states" || true)
    [[ $active -eq 0 && $(wc -l <<<"$states") -eq $N_JOBS ]] && break
    if ((SECONDS >= deadline)); then
        echo "$states" >&2
        fail "jobs did not finish within ${WAIT_S}s"
    fi
    sleep 0.5
done

# finished jobs must still be visible to squeue and scontrol (MinJobAge; no sacct)
for id in "${ids[@]}"; do
    st=$(squeue -h -t all -j "$id" -o %T)
    [[ $st == COMPLETED ]] || fail "squeue shows job $id as '$st', expected COMPLETED"
    sc=$(scontrol show job "$id") || fail "scontrol show job $id failed"
    grep -q 'JobState=COMPLETED' <<<"$sc" || fail "scontrol: job $id not COMPLETED: $(grep -o 'JobState=[A-Z_]*' <<<"$sc")"
    grep -q 'ExitCode=0:0' <<<"$sc" || fail "scontrol: job $id exit code is not 0:0"
done

# collect results: id cuda start end submit
rows=()
for ((i = 0; i < N_JOBS; i++)); do
    f=$work/result$i
    [[ -s $f ]] || fail "job ${ids[$i]} wrote no result file (log: $(cat "$work/slurm-${ids[$i]}.log" 2>/dev/null))"
    field() { sed -n "s/^$1=//p" "$f"; }
    start=$(field start) end=$(field end) cuda=$(field cuda) jobid=$(field jobid)
    [[ -n $start && -n $end ]] || fail "job ${ids[$i]}: incomplete result file: $(cat "$f")"
    [[ $jobid == "${ids[$i]}" ]] || fail "job ${ids[$i]} saw SLURM_JOB_ID='$jobid'"
    [[ $cuda == 0 || $cuda == 1 ]] || fail "job $jobid saw CUDA_VISIBLE_DEVICES='$cuda', expected 0 or 1"
    rows+=("$jobid $cuda $start $end ${submitted[$jobid]}")
    printf 'smoke_check: job %s CUDA_VISIBLE_DEVICES=%s ran %.2fs..%.2fs\n' "$jobid" "$cuda" \
        "$(awk -v a="$start" -v b="${submitted[${ids[0]}]}" 'BEGIN{print a-b}')" \
        "$(awk -v a="$end" -v b="${submitted[${ids[0]}]}" 'BEGIN{print a-b}')"
done

# concurrency: overlaps between jobs, max concurrency, devices of overlapping pairs
printf '%s\n' "${rows[@]}" | awk '
{ id[NR]=$1; dev[NR]=$2; s[NR]=$3; e[NR]=$4; sub_t[NR]=$5 }
END {
    bad = 0; pairs = 0
    for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++)
        if (s[i] < e[j] && s[j] < e[i]) {
            pairs++
            if (dev[i] == dev[j]) {
                printf "smoke_check: FAIL: jobs %s and %s ran at the same time on the same GPU %s\n", id[i], id[j], dev[i] > "/dev/stderr"
                bad = 1
            }
        }
    # max number of jobs running at one instant (check at every start time)
    maxc = 0
    for (i = 1; i <= NR; i++) {
        c = 0
        for (j = 1; j <= NR; j++) if (s[j] <= s[i] && s[i] < e[j]) c++
        if (c > maxc) maxc = c
    }
    if (maxc > 2) { printf "smoke_check: FAIL: %d jobs ran at once with only 2 GPUs\n", maxc > "/dev/stderr"; bad = 1 }
    if (maxc < 2) { printf "smoke_check: FAIL: jobs never ran 2 at once (2 GPUs expected)\n" > "/dev/stderr"; bad = 1 }
    # latency: sbatch -> start for jobs that started at once; hand-over for the queued one
    for (i = 1; i <= NR; i++) {
        wait_for = sub_t[i]
        for (j = 1; j <= NR; j++) if (j != i && e[j] <= s[i] && e[j] > wait_for) wait_for = e[j]
        printf "smoke_check: job %s start latency %.3fs (%s)\n", id[i], s[i] - wait_for, (wait_for == sub_t[i] ? "after sbatch" : "after a GPU was freed")
    }
    printf "smoke_check: max concurrent jobs %d, overlapping pairs %d\n", maxc, pairs
    exit bad
}' || fail "concurrency/GPU checks failed"

echo "smoke_check: OK"

#!/usr/bin/env bash
# One run of a sweep:
#     sweep_run.sh [--retry_diverged] [--run_dir DIR] LOG_DIR PYTHON SCRIPT ARGS...
#
# Finds the run's folder with SCRIPT's --print_run_dir (the results contract; --run_dir
# passes it in when the caller has resolved it already) and
#   - skips it when its summary.json says finished (or diverged: a diverged run is a
#     result; --retry_diverged runs it again from scratch),
#   - resumes it (--resume) when an unfinished folder holds last.pt,
#   - starts it again (--overwrite) when an unfinished folder has no checkpoint,
#   - else runs it.
# Output is appended to LOG_DIR/<script>/<run folder name>.log; one line per call is
# appended to LOG_DIR/outcomes.tsv: outcome, exit status, command, run folder, log.
# Exit status: the training script's (0 also for a skipped finished run; 3 for a
# diverged one). Used by scripts/sweep_lib.sh locally and by SLURM array tasks alike.

retry_diverged=0 run_dir=""
while [[ $1 == --* ]]; do
    case $1 in
        --retry_diverged) retry_diverged=1; shift ;;
        --run_dir) run_dir=$2; shift 2 ;;
        *) echo "sweep_run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
log_dir=$1 python=$2 script=$3
shift 3

started=$SECONDS
command_line=$(printf '%q ' "$python" "$script" "$@")
rc=0 outcome="" log=""

finish() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$outcome" "$rc" "$command_line" "$run_dir" "$log" >>"$log_dir/outcomes.tsv"
    echo "$outcome ($((SECONDS - started))s): ${run_dir:-$command_line}"
    [[ -z ${SWEEP_RC_FILE:-} ]] || echo "$rc" >"$SWEEP_RC_FILE"
    exit "$rc"
}

# status of the run folder from its summary.json ("" when there is none)
run_status() {
    [[ -f $run_dir/summary.json ]] || return 0
    "$python" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("status", ""))' \
        "$run_dir/summary.json" 2>/dev/null
}

mkdir -p "$log_dir"
if [[ -z $run_dir ]]; then
    if ! run_dir=$("$python" "$script" "$@" --print_run_dir 2>"$log_dir/.print_run_dir.$$"); then
        outcome=failed rc=2
        cat "$log_dir/.print_run_dir.$$" >&2
        rm -f "$log_dir/.print_run_dir.$$"
        run_dir=""
        finish
    fi
    rm -f "$log_dir/.print_run_dir.$$"
    run_dir=$(tail -n 1 <<<"$run_dir")
fi
log=$log_dir/$(basename "$(dirname "$run_dir")")/$(basename "$run_dir").log
mkdir -p "$(dirname "$log")"

status=$(run_status)
extra=()
if [[ $status == finished ]]; then
    outcome=skipped
    echo "=== $(date '+%F %T') skipped: $run_dir is finished" >>"$log"
    finish
elif [[ $status == diverged && $retry_diverged == 0 ]]; then
    outcome=skipped-diverged rc=3
    echo "=== $(date '+%F %T') skipped: $run_dir diverged earlier (--retry_diverged reruns it)" >>"$log"
    finish
elif [[ -f $run_dir/last.pt && $status != diverged ]]; then
    extra=(--resume)
elif [[ -d $run_dir ]] && [[ -n $(ls -A "$run_dir") ]]; then
    extra=(--overwrite)
fi

{
    echo "=== $(date '+%F %T') on $(hostname) CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
    echo "=== $command_line ${extra[*]}"
} >>"$log"
# The run in the background so a stop (SIGTERM from the sweep or SLURM, Ctrl-C) can be
# passed on: the training script then saves its state as interrupted, and the next
# sweep resumes it.
"$python" "$script" "$@" "${extra[@]}" >>"$log" 2>&1 &
child=$!
trap 'kill -TERM $child 2>/dev/null' TERM INT
wait $child
rc=$?
while kill -0 $child 2>/dev/null; do  # wait returned early because a signal arrived
    wait $child
    rc=$?
done
status=$(run_status)
outcome=${status:-failed}
[[ $outcome == running ]] && outcome=failed  # it died without writing a final status
finish

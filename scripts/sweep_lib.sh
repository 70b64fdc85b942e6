# Shared part of scripts/sweep_gls.sh and scripts/sweep_sln.sh (sourced, not run).
#
# A sweep script turns its options into a list of jobs (add_job), then either runs
# them here on parallel slots (run_local) or writes SLURM job arrays (write_slurm).
# Every job is one call of scripts/sweep_run.sh, which skips a finished run folder
# and resumes an unfinished one, so a sweep can be restarted at any time.
#
# Needs bash >= 4.3 (associative arrays, printf %q).

SWEEP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SWEEP_DIR")

# ---------------------------------------------------------------- options

# Every option can also come from the environment (GPUS="0 1" scripts/sweep_gls.sh ...).
GPUS=${GPUS:-}
RUNS_PER_GPU=${RUNS_PER_GPU:-1}
SLOTS=${SLOTS:-}
SEEDS=${SEEDS:-0}
LOG_DIR=${LOG_DIR:-}
PYTHON=${PYTHON:-}
SLURM=${SLURM:-0}
DRY_RUN=${DRY_RUN:-0}
SBATCH_ARGS=${SBATCH_ARGS:-}
ARRAY_PARALLEL=${ARRAY_PARALLEL:-}
RETRY_DIVERGED=0
PASS=()          # arguments passed through to every training command

COMMON_USAGE='Where the runs go:
  --gpus "0 1 2 3"     GPUs to use (env GPUS; default: every GPU nvidia-smi lists, else one CPU slot).
                       "cpu" entries are CPU slots: --gpus "cpu cpu" runs two runs at a time on the CPU.
  --runs_per_gpu N     parallel runs on each GPU (env RUNS_PER_GPU, default 1)
  --slots N            N CPU slots; shorthand for --gpus "cpu ... cpu" (env SLOTS)
  --seeds "0 1 2"      training seeds (env SEEDS, default 0)
  --log_dir DIR        per-run logs, outcomes.tsv and SLURM files
                       (env LOG_DIR; default <result_dir>/sweep_logs/<sweep>)
  --python PY          interpreter (env PYTHON; default .venv/bin/python if present, else python3)
  --retry_diverged     run diverged runs again from scratch (by default a diverged run is a result
                       and is skipped like a finished one)
SLURM instead of local slots:
  --slurm              write <log_dir>/tasks*.txt (one command line per run) and submit.sh, which
                       submits them as job arrays of scripts/sweep_array.sbatch, and run submit.sh
  --dry-run            with --slurm: write the files and print submit.sh, submit nothing
  --sbatch_args "..."  extra sbatch options, e.g. "-p gpu --time=24:00:00" (env SBATCH_ARGS)
  --array_parallel N   at most N tasks of an array at a time (sbatch --array=1-K%N)
Everything else (or everything after --) is passed to the training script unchanged,
e.g. --dataset cifar100 --model resnet18 --n_epoch 50 --result_dir results/c100.
The sweep runs in the repository root: relative paths are relative to it.'

# Parse one option shared by both sweeps; sets CONSUMED to the number of words used.
parse_common_option() {
    CONSUMED=2
    case $1 in
        --gpus) GPUS=$2 ;;
        --runs_per_gpu) RUNS_PER_GPU=$2 ;;
        --slots) SLOTS=$2 ;;
        --seeds) SEEDS=$2 ;;
        --log_dir) LOG_DIR=$2 ;;
        --python) PYTHON=$2 ;;
        --sbatch_args) SBATCH_ARGS=$2 ;;
        --array_parallel) ARRAY_PARALLEL=$2 ;;
        --slurm) SLURM=1; CONSUMED=1 ;;
        --dry-run|--dry_run) DRY_RUN=1; CONSUMED=1 ;;
        --retry_diverged) RETRY_DIVERGED=1; CONSUMED=1 ;;
        --) shift; PASS+=("$@"); CONSUMED=$(($# + 1)) ;;
        *) PASS+=("$1"); CONSUMED=1 ;;
    esac
    if ((CONSUMED == 2 && $# < 2)); then
        die "$1 needs a value"
    fi
}

die() {
    echo "error: $*" >&2
    exit 2
}

# The value of a pass-through flag (e.g. --result_dir), or $2 when it is not given.
pass_value() {
    local flag=$1 value=$2 i
    for ((i = 0; i < ${#PASS[@]}; i++)); do
        case ${PASS[i]} in
            "$flag") value=${PASS[i + 1]:-} ;;
            "$flag"=*) value=${PASS[i]#*=} ;;
        esac
    done
    printf '%s' "$value"
}

# Fill the defaults that depend on other options and check them.
finish_options() {
    local sweep_name=$1
    cd "$REPO_DIR" || die "cannot enter $REPO_DIR"
    if [[ -z $PYTHON ]]; then
        if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
    fi
    if [[ -z $LOG_DIR ]]; then
        LOG_DIR=$(pass_value --result_dir results)/sweep_logs/$sweep_name
    fi
    [[ $RUNS_PER_GPU =~ ^[1-9][0-9]*$ ]] || die "--runs_per_gpu $RUNS_PER_GPU must be a positive integer"
    [[ -n $SEEDS ]] || die "--seeds is empty"
    mkdir -p "$LOG_DIR"
}

# ---------------------------------------------------------------- jobs

JOB_KEY=()   # a name other jobs can depend on
JOB_DEP=()   # the key of the job that must succeed first, or ""
JOB_RUN=()   # the shell-quoted training command: SCRIPT ARGS...

# add_job KEY DEP SCRIPT ARGS...: one run of SCRIPT with the pass-through arguments,
# then ARGS (later flags win in argparse, so the sweep's own values take effect).
add_job() {
    local key=$1 dep=$2
    shift 2
    JOB_KEY+=("$key")
    JOB_DEP+=("$dep")
    JOB_RUN+=("$(printf '%q ' "$1" "${PASS[@]}" "${@:2}")")
}

# The command line of job $1: scripts/sweep_run.sh with its options, then the run.
# $2, when given, is the run's folder, already resolved (saves sweep_run.sh a Python start).
job_command() {
    local words=(scripts/sweep_run.sh)
    ((RETRY_DIVERGED)) && words+=(--retry_diverged)
    [[ -n ${2:-} ]] && words+=(--run_dir "$2")
    printf '%q ' "${words[@]}" "$LOG_DIR" "$PYTHON"
    printf '%s' "${JOB_RUN[$1]}"
}

# ---------------------------------------------------------------- local slots

# SLOT_DEV[i] is what slot i sets CUDA_VISIBLE_DEVICES to ("" = CPU only).
make_slots() {
    SLOT_DEV=()
    local devices=() d k
    if [[ -n $SLOTS ]]; then
        [[ $SLOTS =~ ^[1-9][0-9]*$ ]] || die "--slots $SLOTS must be a positive integer"
        for ((k = 0; k < SLOTS; k++)); do devices+=(cpu); done
    elif [[ -n $GPUS ]]; then
        read -ra devices <<<"$GPUS"
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        read -ra devices <<<"$(nvidia-smi --query-gpu=index --format=csv,noheader | tr '\n' ' ')"
    fi
    ((${#devices[@]})) || devices=(cpu)
    for d in "${devices[@]}"; do
        for ((k = 0; k < RUNS_PER_GPU; k++)); do
            if [[ $d == cpu ]]; then SLOT_DEV+=(""); else SLOT_DEV+=("$d"); fi
        done
    done
    # CPU runs side by side would each start one thread per core and slow each other
    # down: give each CPU slot its share of the cores unless the user chose.
    local cpu_slots=0
    for d in "${SLOT_DEV[@]}"; do [[ -z $d ]] && cpu_slots=$((cpu_slots + 1)); done
    CPU_THREADS=${OMP_NUM_THREADS:-}
    if [[ -z $CPU_THREADS ]] && ((cpu_slots)); then
        CPU_THREADS=$(($(nproc) / cpu_slots))
        ((CPU_THREADS >= 1)) || CPU_THREADS=1
    fi
}

# Run every job on the slots; a job starts when a slot is free and the job it depends on
# has succeeded. A job whose dependency failed is recorded and not started.
run_local() {
    make_slots
    local n=${#JOB_RUN[@]} nslots=${#SLOT_DEV[@]} j
    local state_dir
    state_dir=$(mktemp -d)
    : >"$LOG_DIR/outcomes.tsv"
    echo "sweep: $n runs on $nslots slot(s) [$(slot_names)], logs in $LOG_DIR"
    # Every run's folder from one Python process (see scripts/run_dirs.py); a run it
    # cannot resolve (empty line) resolves itself in sweep_run.sh and reports the error.
    local run_dirs=()
    mapfile -t run_dirs < <(printf '%s\n' "${JOB_RUN[@]}" | "$PYTHON" scripts/run_dirs.py)
    JOB_CMD=()
    for ((j = 0; j < n; j++)); do JOB_CMD+=("$(job_command "$j" "${run_dirs[j]:-}")"); done

    declare -A rc_of=()                 # job key -> exit status, once done
    local -a pending=() slot_job=() slot_pid=()
    local s k started=0 done_count=0 failed=0
    for ((j = 0; j < n; j++)); do pending+=("$j"); done
    for ((s = 0; s < nslots; s++)); do slot_job[s]=""; slot_pid[s]=""; done

    trap 'stop_local' INT TERM
    while ((${#pending[@]} || started > done_count)); do
        # Start whatever can start.
        for ((s = 0; s < nslots; s++)); do
            [[ -z ${slot_job[s]} ]] || continue
            local pick="" rest=()
            for k in "${pending[@]}"; do
                local dep=${JOB_DEP[k]}
                if [[ -z $pick && ( -z $dep || -n ${rc_of[$dep]+x} ) ]]; then
                    if [[ -n $dep && ${rc_of[$dep]} != 0 ]]; then
                        record_dependency_failure "$k" "$dep"
                        rc_of[${JOB_KEY[k]}]=dep
                        failed=$((failed + 1))
                        continue
                    fi
                    pick=$k
                else
                    rest+=("$k")
                fi
            done
            pending=("${rest[@]}")
            [[ -n $pick ]] || break
            launch "$pick" "${SLOT_DEV[s]}" "$state_dir/rc.$pick" &
            slot_job[s]=$pick
            slot_pid[s]=$!
            started=$((started + 1))
        done
        if ((started == done_count)); then
            ((${#pending[@]} == 0)) || die "jobs wait for dependencies that no job provides"
            break
        fi
        # Wait for a run to end (its rc file appears when sweep_run.sh exits).
        sleep 0.5
        for ((s = 0; s < nslots; s++)); do
            j=${slot_job[s]}
            [[ -n $j ]] || continue
            # A run killed outright (SIGKILL) writes no rc file: it just disappears.
            if [[ -s $state_dir/rc.$j ]] || ! kill -0 "${slot_pid[s]}" 2>/dev/null; then
                local rc
                wait "${slot_pid[s]}" 2>/dev/null
                rc=$?
                [[ -s $state_dir/rc.$j ]] && rc=$(<"$state_dir/rc.$j")
                rc_of[${JOB_KEY[j]}]=$rc
                ((rc == 0)) || failed=$((failed + 1))
                slot_job[s]=""
                slot_pid[s]=""
                done_count=$((done_count + 1))
            fi
        done
    done
    trap - INT TERM
    rm -rf "$state_dir"
    report_outcomes
    ((failed == 0))
}

# One job in the background, pinned to its device; sweep_run.sh writes its exit status
# to SWEEP_RC_FILE. exec makes $! the run's own process, so a stop reaches it directly.
launch() {
    local j=$1 dev=$2 rc_file=$3
    export CUDA_VISIBLE_DEVICES=$dev SWEEP_RC_FILE=$rc_file
    [[ -n $dev ]] || export OMP_NUM_THREADS=$CPU_THREADS
    eval "exec ${JOB_CMD[j]}"
}

stop_local() {
    echo "sweep: stopping; the running runs save their state and can be resumed by running the sweep again" >&2
    local pid
    for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null; done
    wait
    report_outcomes
    exit 130
}

slot_names() {
    local d names=()
    for d in "${SLOT_DEV[@]}"; do names+=("${d:-cpu}"); done
    echo "${names[*]}"
}

record_dependency_failure() {
    local k=$1 dep=$2
    printf 'skipped-dependency\t-\t%s\t-\tneeds %s, which did not finish\n' \
        "${JOB_CMD[k]}" "$dep" >>"$LOG_DIR/outcomes.tsv"
    echo "skipped (needs $dep, which did not finish): ${JOB_CMD[k]}"
}

# Count the outcomes sweep_run.sh recorded (first column of outcomes.tsv).
report_outcomes() {
    echo "sweep: outcomes (from $LOG_DIR/outcomes.tsv):"
    cut -f1 "$LOG_DIR/outcomes.tsv" | sort | uniq -c | sed 's/^/  /'
}

# ---------------------------------------------------------------- SLURM

# Write one task file per dependency level and submit.sh, which submits each as a job
# array of scripts/sweep_array.sbatch; level 1 waits for level 0 (afterany: a failed
# warm-up makes only its own dependants fail, with a clear message).
write_slurm() {
    local name=$1 j
    local tasks0=$LOG_DIR/tasks_warmup.txt tasks1=$LOG_DIR/tasks.txt
    : >"$tasks0"
    : >"$tasks1"
    # No pre-resolved run folders here: each task resolves its own on the node, with
    # the code as it is when the task starts.
    local file
    for ((j = 0; j < ${#JOB_RUN[@]}; j++)); do
        file=$tasks1
        [[ ${JOB_KEY[j]} == warmup:* ]] && file=$tasks0
        printf '%s\n' "$(job_command "$j")" >>"$file"
    done
    local n0 n1 throttle=""
    n0=$(wc -l <"$tasks0")
    n1=$(wc -l <"$tasks1")
    [[ -n $ARRAY_PARALLEL ]] && throttle="%$ARRAY_PARALLEL"
    local submit=$LOG_DIR/submit.sh common
    common="--parsable --output=$(printf '%q' "$LOG_DIR")/slurm-%A_%a.out $SBATCH_ARGS"
    {
        echo "#!/usr/bin/env bash"
        echo "# Submits the SLURM job arrays of this sweep (written by scripts/$name.sh --slurm)."
        echo "# Each array task runs line SLURM_ARRAY_TASK_ID of its task file."
        echo "set -euo pipefail"
        echo "cd $(printf '%q' "$REPO_DIR")"
        if ((n0)); then
            echo "warmup=\$(sbatch $common --job-name=$name-warmup --array=1-$n0$throttle scripts/sweep_array.sbatch $(printf '%q' "$tasks0"))"
            echo "echo \"warm-up array: \$warmup\""
        else
            rm -f "$tasks0"
        fi
        if ((n1)); then
            local dep=""
            ((n0)) && dep="--dependency=afterany:\${warmup%%;*} "
            echo "main=\$(sbatch $common $dep--job-name=$name --array=1-$n1$throttle scripts/sweep_array.sbatch $(printf '%q' "$tasks1"))"
            echo "echo \"run array: \$main\""
        else
            rm -f "$tasks1"
        fi
    } >"$submit"
    chmod +x "$submit"
    : >"$LOG_DIR/outcomes.tsv"
    echo "sweep: ${#JOB_RUN[@]} runs: $n0 warm-up task(s), $n1 other task(s); files in $LOG_DIR"
    if ((DRY_RUN)); then
        echo "dry run: submit with  bash $submit"
        cat "$submit"
        return 0
    fi
    command -v sbatch >/dev/null || die "sbatch not found: run this on the cluster's login node, or submit the written files there with  bash $submit"
    bash "$submit"
}

run_sweep() {
    local name=$1
    ((${#JOB_RUN[@]})) || die "the sweep has no runs"
    if ((SLURM)); then
        write_slurm "$name"
    else
        run_local
    fi
}

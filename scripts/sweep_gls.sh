#!/usr/bin/env bash
# Sweep of generalized label smoothing (Wei et al., ICML 2022) over smooth rates, noise
# settings and seeds, on parallel GPU/CPU slots or as SLURM job arrays.
#
#   scripts/sweep_gls.sh --noise "symmetric:0.2 symmetric:0.4" --seeds "0 1 2" --gpus "0 1 2 3"
#
# --mode load (default): one CE warm-up (main_warmup.py) per noise setting and seed, then
# main_GLS_load.py for every smooth rate, started from it once it has finished;
# --mode direct: main_GLS_direct_train.py for every smooth rate; --mode both: both.
# Restartable: finished runs are skipped, unfinished ones resumed (scripts/sweep_run.sh).
source "$(dirname "${BASH_SOURCE[0]}")/sweep_lib.sh"

# The paper's smooth rates (PROTOCOL §1).
SMOOTH_RATES=${SMOOTH_RATES:-"0.8 0.6 0.4 0.2 0.0 -0.2 -0.4 -0.6 -0.8 -1.0 -2.0 -4.0 -6.0 -8.0"}
NOISE=${NOISE:-"symmetric:0.2"}
MODE=${MODE:-load}
WARMUP_ARGS=${WARMUP_ARGS:-}

usage() {
    cat <<EOF
usage: scripts/sweep_gls.sh [options] [training-script flags]

What to run:
  --smooth_rates "LIST"  (env SMOOTH_RATES, default the paper's: $SMOOTH_RATES)
  --noise "TYPE:RATE ..."  noise settings (env NOISE, default $NOISE), e.g. "symmetric:0.4 pairflip:0.2"
  --mode load|direct|both  GLS after the CE warm-up, from scratch, or both (env MODE, default $MODE)
  --warmup_args "FLAGS"  flags for the warm-up runs only, after the pass-through ones
                         (env WARMUP_ARGS), e.g. "--lr 0.1 --n_epoch 30"
$COMMON_USAGE
EOF
}

while (($#)); do
    case $1 in
        --smooth_rates) SMOOTH_RATES=$2; shift 2 ;;
        --noise) NOISE=$2; shift 2 ;;
        --mode) MODE=$2; shift 2 ;;
        --warmup_args) WARMUP_ARGS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) parse_common_option "$@"; shift "$CONSUMED" ;;
    esac
done
[[ $MODE == load || $MODE == direct || $MODE == both ]] || die "--mode $MODE: choose load, direct or both"
finish_options sweep_gls
read -ra warmup_args <<<"$WARMUP_ARGS"

for setting in $NOISE; do
    [[ $setting == *:* ]] || die "--noise $setting: write TYPE:RATE, e.g. symmetric:0.4"
    noise=(--noise_type "${setting%%:*}" --noise_rate "${setting#*:}")
    for seed in $SEEDS; do
        warmup=""
        if [[ $MODE != direct ]]; then
            warmup="warmup:$setting:$seed"
            add_job "$warmup" "" main_warmup.py "${noise[@]}" --seed "$seed" "${warmup_args[@]}"
        fi
        for rate in $SMOOTH_RATES; do
            if [[ $MODE != direct ]]; then
                add_job "load:$setting:$seed:$rate" "$warmup" main_GLS_load.py \
                    "${noise[@]}" --seed "$seed" --smooth_rate "$rate"
            fi
            if [[ $MODE != load ]]; then
                add_job "direct:$setting:$seed:$rate" "" main_GLS_direct_train.py \
                    "${noise[@]}" --seed "$seed" --smooth_rate "$rate"
            fi
        done
    done
done
run_sweep sweep_gls

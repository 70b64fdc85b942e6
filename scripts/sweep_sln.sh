#!/usr/bin/env bash
# Sweep of stochastic label noise (Chen et al., ICLR 2021) over sigmas, noise settings and
# seeds with noise_cifar_train.py, on parallel GPU/CPU slots or as SLURM job arrays.
#
#   scripts/sweep_sln.sh --noise "sym:0.4 asym:0.4" --seeds "0 1 2" --gpus "0 1" --correction -1
#
# Every run is one noise_cifar_train.py call; with its momentum model on (the default
# --ema_decay 0.999) it reports SLN (test_acc) and SLN-MO (test_acc_ema) at once.
# Restartable: finished runs are skipped, unfinished ones resumed (scripts/sweep_run.sh).
source "$(dirname "${BASH_SOURCE[0]}")/sweep_lib.sh"

SIGMAS=${SIGMAS:-"0.1 0.2 0.5 1.0"}
NOISE=${NOISE:-"sym:0.4"}

usage() {
    cat <<EOF
usage: scripts/sweep_sln.sh [options] [noise_cifar_train.py flags]

What to run:
  --sigmas "LIST"          (env SIGMAS, default $SIGMAS)
  --noise "MODE:RATE ..."  noise settings for --noise_mode/--noise_rate (env NOISE, default $NOISE),
                           e.g. "sym:0.4 asym:0.4 dependent:0.4"
$COMMON_USAGE
EOF
}

while (($#)); do
    case $1 in
        --sigmas) SIGMAS=$2; shift 2 ;;
        --noise) NOISE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) parse_common_option "$@"; shift "$CONSUMED" ;;
    esac
done
finish_options sweep_sln

for setting in $NOISE; do
    [[ $setting == *:* ]] || die "--noise $setting: write MODE:RATE, e.g. sym:0.4"
    for seed in $SEEDS; do
        for sigma in $SIGMAS; do
            add_job "sln:$setting:$seed:$sigma" "" noise_cifar_train.py \
                --noise_mode "${setting%%:*}" --noise_rate "${setting#*:}" --seed "$seed" --sigma "$sigma"
        done
    done
done
run_sweep sweep_sln

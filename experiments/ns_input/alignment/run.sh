#!/usr/bin/env bash
# Does round 10's meta-gradient carry to the validation2 tasks? At the Muon start of celo2_ns_input, under
# round 10's objective (training loss, uniform weights, rate 4e-3, adam_lr_mult 1), diagnose the PES gradient on
# round 10's meta-training family and on each validation2 task (as a family with its options), each with its
# own seed, then compare (evolopt/gradient_alignment.py). usage: bash experiments/ns_input/alignment/run.sh [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
PAIRS=${1:-512}  # ~2000 particles a family: PES rho is ~0.002 per particle here (README, round 11 notes)
OUT=experiments/ns_input/alignment
COMMON=(strategy=pes arch=celo2_ns_input theta_init=muon arch.learning_rate=0.004 arch.adam_lr_mult=1.0
  augmentation.reparam=none unroll.meta_loss=train unroll.meta_weight=uniform tasks_per_member=2
  unroll.truncation_length=50 unroll.min_length=300 unroll.max_length=300 unroll.stagger=false
  strategy.sigma=0.01 "pairs=$PAIRS" repeats=2 truncations=6 sigmas=none autodiff=false full=false)
declare -A FAMILIES=(
  [train]="task_family=image_mlp task_family.datasets=[digits,mnist5k] task_family.image_size=8 task_family.hidden=[32,32] task_family.batch_size=64"
  [v2_mnist5k_mlp32_16x16]="task_family=image_mlp task_family.datasets=[mnist5k] task_family.image_size=16 task_family.hidden=[32]"
  [v2_mnist5k_mlp64x2_gelu_12x12]="task_family=image_mlp task_family.datasets=[mnist5k] task_family.image_size=12 task_family.hidden=[64,64] task_family.activation=gelu"
  [v2_mnist1d_mlp96_tanh]="task_family=image_mlp task_family.datasets=[mnist1d] task_family.hidden=[96] task_family.activation=tanh"
  [v2_mnist5k_conv4x8_12x12]="task_family=image_conv task_family.datasets=[mnist5k] task_family.image_size=12 task_family.channels=[4,8]"
  [v2_lm_d24x2]="task_family=lm task_family.d_model=24 task_family.num_layers=2 task_family.num_heads=2"
  [v2_regression_mlp48x2_silu]="task_family=regression task_family.input_dim=24 task_family.hidden=[48,48] task_family.activation=silu task_family.teacher_hidden=[48]"
)
ORDER=(train v2_mnist5k_mlp32_16x16 v2_mnist5k_mlp64x2_gelu_12x12 v2_mnist1d_mlp96_tanh v2_mnist5k_conv4x8_12x12 v2_lm_d24x2 v2_regression_mlp48x2_silu)
# a second diagnosis of the training family (another seed): its aligned cosine with the first should be ~1
FAMILIES[train_again]=${FAMILIES[train]}; ORDER+=(train_again)
seed=0
for name in "${ORDER[@]}"; do
  seed=$((seed + 1))
  dir="$OUT/p${PAIRS}_$name"
  [ -f "$dir/diagnose.json" ] && continue
  # shellcheck disable=SC2086
  python -m evolopt.diagnose "${COMMON[@]}" ${FAMILIES[$name]} seed=$seed out="$dir" > "$dir.log" 2>&1
done
dirs=$(printf "$OUT/p${PAIRS}_%s," "${ORDER[@]}")
python -m evolopt.diagnose compare="${dirs%,}" out="$OUT/p${PAIRS}_alignment"

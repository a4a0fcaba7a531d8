#!/usr/bin/env bash
# Specialisation, the workflow users run: warm-start from the shipped optimizer and meta-train on one family
# (MNIST-1D MLPs, one hidden layer of 64, 100-2000 steps), then evaluate on held-out instances of the family
# (suite mnist1d_family: other widths, depths, input sizes, a longer horizon).
# The recipe is experiments/ns_input/run.sh's; a warm start takes only theta, so the shipped file's options
# (rate 4e-3, adam_lr_mult 1, conv_as_matrix) are set here. The meta-loss is the validation loss
# (unroll.meta_loss=valid): round 1's rules fit MNIST-1D MLPs faster and generalised worse there (validation loss
# x1.2-1.9 on the two MNIST MLP validation tasks), and this family is exactly those models.
# usage: bash experiments/specialise/run.sh SEED [extra overrides...]; the same command resumes.
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
exec bash experiments/ns_input/run.sh "$SEED" theta_init=experiments/specialise/start_celo2-cpu_round1.npz \
  arch.learning_rate=0.004 arch.adam_lr_mult=1.0 arch.conv_as_matrix=true \
  unroll.meta_loss=valid 'task_family.datasets=[mnist1d]' 'task_family.hidden=[64]' \
  generations=200 evaluation.every=200 run_dir="experiments/specialise/runs/seed$SEED" "$@"

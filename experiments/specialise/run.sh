#!/usr/bin/env bash
# Specialisation, the workflow users run: warm-start from the shipped optimizer and meta-train on one family
# (MNIST-1D MLPs, one hidden layer of 64, 100-2000 steps), then evaluate on held-out instances of the family
# (suite mnist1d_family: other widths, depths, input sizes, a longer horizon).
# usage: bash experiments/specialise/run.sh SEED [extra overrides...]; the same command resumes.
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
exec python -m evolopt.train \
  strategy=pes arch=celo2_ns_input theta_init=celo2-cpu task_family=image_mlp \
  'task_family.datasets=[mnist1d]' task_family.image_size=8 'task_family.hidden=[64]' task_family.batch_size=64 \
  augmentation.reparam=none population_size=64 tasks_per_member=4 \
  unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  strategy.sigma=0.01 strategy.optimizer=sgd strategy.grad_clip=1e-6 strategy.learning_rate=20000 \
  strategy.weight_decay=0 strategy.lr_schedule=cosine \
  generations=200 checkpoint_every=25 keep_checkpoints=1 \
  evaluation.meta_loss_every=25 evaluation.every=200 evaluation.steps=1000 evaluation.num_tasks=8 \
  seed="$SEED" run_dir="experiments/specialise/runs/seed$SEED" "$@"

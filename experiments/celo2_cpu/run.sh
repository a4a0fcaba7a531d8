#!/usr/bin/env bash
# Meta-train Celo2 on 2 CPU cores: the Celo2 recipe scaled down (see README.md).
# usage: bash experiments/celo2_cpu/run.sh SEED [extra overrides...]
# Re-running the same command resumes from the last checkpoint.
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
exec python -m evolopt.train \
  strategy=pes arch=celo2 task_family=image_mlp \
  'task_family.datasets=[digits,mnist5k]' task_family.image_size=8 'task_family.hidden=[32]' task_family.batch_size=64 \
  augmentation.reparam=global augmentation.reparam_low=0.001 augmentation.reparam_high=1000.0 \
  population_size=16 tasks_per_member=4 \
  unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  strategy.sigma=0.01 strategy.optimizer=adamw strategy.learning_rate=0.001 strategy.weight_decay=0.0001 \
  strategy.lr_schedule=cosine \
  generations=1500 checkpoint_every=50 keep_checkpoints=1 \
  evaluation.meta_loss_every=50 evaluation.every=250 evaluation.steps=1000 evaluation.num_tasks=8 \
  seed="$SEED" run_dir="experiments/celo2_cpu/runs/seed$SEED" "$@"

#!/usr/bin/env bash
# Round 5 (README.md): round 4's recipe on a mixture of four image_mlp families that differ only in the activation.
# usage: bash experiments/ns_input/run_r5.sh SEED [extra overrides...]; the same command resumes.
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
M='{name:image_mlp,datasets:[digits,mnist5k],image_size:8,hidden:[32],batch_size:64,activation:ACT}'
exec python -m evolopt.train \
  strategy=pes arch=celo2_ns_input theta_init=muon task_family=mixture \
  "task_family.members=[${M/ACT/relu},${M/ACT/gelu},${M/ACT/silu},${M/ACT/tanh}]" \
  augmentation.reparam=none \
  population_size=256 tasks_per_member=4 \
  unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  unroll.meta_loss=valid unroll.meta_weight=linear \
  arch.learning_rate=0.004 arch.adam_lr_mult=1.0 \
  strategy.sigma=0.01 strategy.optimizer=sgd strategy.grad_clip=1e-6 strategy.learning_rate=100000 \
  strategy.weight_decay=0 strategy.lr_schedule=cosine \
  generations=75 checkpoint_every=25 keep_checkpoints=1 \
  evaluation.meta_loss_every=15 evaluation.every=75 evaluation.steps=1000 evaluation.num_tasks=8 \
  seed="$SEED" run_dir="experiments/ns_input/runs/r5_seed$SEED" "$@"

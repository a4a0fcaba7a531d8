#!/usr/bin/env bash
# Meta-train celo2_ns_input from its Muon start on 2 CPU cores (see README.md).
# usage: bash experiments/ns_input/run.sh SEED [extra overrides...]; the same command resumes.
# Differences from experiments/celo2_cpu/run.sh (the evidence: experiments/es_diagnostics):
#   arch celo2_ns_input (smooth at Muon), no reparameterisation augmentation (drowns the signal),
#   32 pairs (cos ~0.33 with the gradient vs ~0.15 at 8), normalised-SGD outer steps of fixed norm
#   (grad_clip=1e-6, so a step is learning_rate x 1e-6 long; Adam's per-coordinate steps lower the alignment).
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
# MEMBERS (a list of family configs, run_layouts.sh) replaces the image_mlp family by a mixture of them
if [ -n "${MEMBERS:-}" ]; then
  FAMILY=(task_family=mixture "task_family.members=$MEMBERS")
else
  FAMILY=(task_family=image_mlp 'task_family.datasets=[digits,mnist5k]' task_family.image_size=8 'task_family.hidden=[32]'
          task_family.batch_size=64)
fi
exec python -m evolopt.train \
  strategy=pes arch=celo2_ns_input theta_init=muon "${FAMILY[@]}" \
  augmentation.reparam=none \
  population_size=64 tasks_per_member=4 \
  unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  strategy.sigma=0.01 strategy.optimizer=sgd strategy.grad_clip=1e-6 strategy.learning_rate=20000 \
  strategy.weight_decay=0 strategy.lr_schedule=cosine \
  generations=300 checkpoint_every=25 keep_checkpoints=1 \
  evaluation.meta_loss_every=25 evaluation.every=300 evaluation.steps=1000 evaluation.num_tasks=8 \
  seed="$SEED" run_dir="experiments/ns_input/runs/seed$SEED" "$@"

#!/usr/bin/env bash
# Round 9: round 7a's recipe (run.sh plus its overrides) on a mixture of four models with
# different parameter layouts (task_family=mixture, separate layouts; README.md, "Round 9").
# usage: bash experiments/ns_input/run_layouts.sh SEED [extra overrides...]; the same command resumes.
set -euo pipefail
SEED=${1:-0}; shift || true
cd "$(dirname "$0")/../.."
MEMBERS='[{name:image_mlp,datasets:[digits,mnist5k],image_size:8,hidden:[32,32],batch_size:64},'\
'{name:image_mlp,datasets:[mnist5k],image_size:12,hidden:[64],batch_size:64},'\
'{name:image_mlp,datasets:[mnist1d],hidden:[48,48],activation:tanh,batch_size:64},'\
'{name:regression,input_dim:16,hidden:[32,32],activation:silu,batch_size:64}]'
exec python -m evolopt.train \
  strategy=pes arch=celo2_ns_input theta_init=muon task_family=mixture "task_family.members=$MEMBERS" \
  augmentation.reparam=none arch.learning_rate=0.004 arch.adam_lr_mult=1.0 \
  unroll.meta_loss=both unroll.meta_weight=linear \
  population_size=128 tasks_per_member=2 \
  unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  strategy.sigma=0.01 strategy.optimizer=sgd strategy.grad_clip=1e-6 strategy.learning_rate=100000 \
  strategy.weight_decay=0 strategy.lr_schedule=cosine \
  generations=75 checkpoint_every=25 keep_checkpoints=1 \
  evaluation.meta_loss_every=15 evaluation.every=75 evaluation.steps=1000 evaluation.num_tasks=8 \
  seed="$SEED" run_dir="experiments/ns_input/runs/r9_seed$SEED" "$@"

#!/usr/bin/env bash
# Round 9: round 7a's recipe (run.sh plus its overrides) on a mixture of four models with
# different parameter layouts (task_family=mixture, separate layouts; README.md, "Round 9").
# usage: bash experiments/ns_input/run_layouts.sh SEED [extra overrides...]; the same command resumes.
set -euo pipefail
SEED=${1:-0}; shift || true
MEMBERS='[{name:image_mlp,datasets:[digits,mnist5k],image_size:8,hidden:[32,32],batch_size:64},'\
'{name:image_mlp,datasets:[mnist5k],image_size:12,hidden:[64],batch_size:64},'\
'{name:image_mlp,datasets:[mnist1d],hidden:[48,48],activation:tanh,batch_size:64},'\
'{name:regression,input_dim:16,hidden:[32,32],activation:silu,batch_size:64}]'
MEMBERS="$MEMBERS" exec bash "$(dirname "$0")/run.sh" "$SEED" \
  arch.learning_rate=0.004 arch.adam_lr_mult=1.0 unroll.meta_loss=both unroll.meta_weight=linear \
  population_size=128 tasks_per_member=2 strategy.learning_rate=100000 \
  generations=75 checkpoint_every=25 evaluation.meta_loss_every=15 evaluation.every=75 \
  run_dir="experiments/ns_input/runs/r9_seed$SEED" "$@"

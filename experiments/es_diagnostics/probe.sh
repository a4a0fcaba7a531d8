#!/usr/bin/env bash
# ES-gradient probes of the celo2_cpu recipe (experiments/celo2_cpu/run.sh) at a theta.
# usage: bash experiments/es_diagnostics/probe.sh OUT [extra overrides, e.g. theta_init=muon strategy.sigma=0.001]
set -euo pipefail
OUT=$1; shift
cd "$(dirname "$0")/../.."
exec python -m evolopt.diagnose \
  strategy=pes arch=celo2 task_family=image_mlp \
  'task_family.datasets=[digits,mnist5k]' task_family.image_size=8 'task_family.hidden=[32]' task_family.batch_size=64 \
  tasks_per_member=4 unroll.truncation_length=50 unroll.min_length=100 unroll.max_length=2000 unroll.stagger=true \
  evaluation.num_tasks=8 evaluation.steps=300 \
  pairs=4,8,32 repeats=3 truncations=2 ref_particles=64 gap_samples=3 \
  out="experiments/es_diagnostics/probes/$OUT" "$@"

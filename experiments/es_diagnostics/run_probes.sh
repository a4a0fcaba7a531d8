#!/usr/bin/env bash
# Part 2's probe table (README.md): run from the repo root. The first probe (every measurement)
# took ~25 min on 2 cores shared with 4 other workers; the others are cut down (fewer pairs, no
# full-unroll ES, fewer gap sigmas).
set -uo pipefail
P=experiments/es_diagnostics/probe.sh
Q="pairs=4,16 repeats=3 full=false gap_samples=2"
bash $P muon_s0.01 theta_init=muon strategy.sigma=0.01
bash $P random_s0.01 theta_init=random strategy.sigma=0.01 $Q ref_particles=32 sigmas=0.001,0.01,0.03
bash $P muon_s0.001 theta_init=muon strategy.sigma=0.001 $Q ref_particles=64 sigmas=none radii=0.003,0.01,0.03
bash $P muon_aug_s0.01 theta_init=muon strategy.sigma=0.01 augmentation.reparam=global $Q ref_particles=32 sigmas=0.001,0.01
bash $P celo2_base_momentum_s0.01 arch=celo2_base theta_init=momentum strategy.sigma=0.01 $Q ref_particles=32 sigmas=0.001,0.01 radii=0.003,0.01,0.03
# remedy runs (train CLI; ~10-15 min each on the shared cores)
R=experiments/celo2_cpu/run.sh
bash $R 0 theta_init=muon strategy.sigma=0.001 strategy.optimizer=sgd strategy.grad_clip=1e-6 strategy.learning_rate=1000 \
  strategy.weight_decay=0 generations=200 evaluation.meta_loss_every=25 checkpoint_every=25 \
  run_dir=experiments/es_diagnostics/runs/muon_s0.001_nsgd_seed0
bash $R 0 theta_init=muon population_size=64 strategy.sigma=0.001 strategy.optimizer=sgd strategy.grad_clip=1e-6 \
  strategy.learning_rate=300 strategy.weight_decay=0 generations=80 evaluation.meta_loss_every=10 checkpoint_every=10 \
  run_dir=experiments/es_diagnostics/runs/muon_s0.001_nsgd_pop64_seed0
bash $R 0 theta_init=muon augmentation.reparam=none population_size=64 strategy.sigma=0.001 strategy.optimizer=sgd \
  strategy.grad_clip=1e-6 strategy.learning_rate=300 strategy.weight_decay=0 generations=80 evaluation.meta_loss_every=10 \
  checkpoint_every=10 run_dir=experiments/es_diagnostics/runs/muon_noaug_s0.001_nsgd_pop64_seed0
# session 5: celo2_ns_input (Newton-Schulz on the momentum input, not on the MLP's output) at its Muon start
bash $P nsin_muon_s0.01 arch=celo2_ns_input theta_init=muon strategy.sigma=0.01 autodiff=false pairs=8,32 repeats=2 \
  sigmas=0.001,0.003,0.01,0.03 radii=0.003,0.01,0.03,0.1
# session 6: round 2's options (rate 4e-3, adam_lr_mult 1, meta_loss=valid) at its start and after r2_seed0's 300 generations
for AT in "nsin_r2_start theta_init=muon" "nsin_r2_seed0_end theta_init=experiments/ns_input/runs/r2_seed0"; do
  set -- $AT
  bash $P "$1" "$2" arch=celo2_ns_input arch.learning_rate=0.004 arch.adam_lr_mult=1.0 unroll.meta_loss=valid \
    strategy.sigma=0.01 autodiff=false pairs=8,32 repeats=2 sigmas=0.003,0.01,0.03 radii=0.01,0.03,0.1,0.3
done

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

#!/usr/bin/env bash
# Part 2's probe table (README.md): run from the repo root; each probe ~3-6 min on 2 shared cores.
set -uo pipefail
P=experiments/es_diagnostics/probe.sh
bash $P muon_s0.01 theta_init=muon strategy.sigma=0.01
bash $P random_s0.01 theta_init=random strategy.sigma=0.01
bash $P muon_s0.001 theta_init=muon strategy.sigma=0.001 sigmas=none
bash $P muon_s0.03 theta_init=muon strategy.sigma=0.03 sigmas=none
bash $P muon_aug_s0.01 theta_init=muon strategy.sigma=0.01 augmentation.reparam=global sigmas=0.001,0.01
bash $P random_s0.001 theta_init=random strategy.sigma=0.001 sigmas=none

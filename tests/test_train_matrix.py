"""Every architecture and every strategy entry meta-trains through the real CLI entry point on
the default task (image_mlp on digits), and every trained file loads with evolopt.load_optimizer."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import evolopt
from evolopt.train import main

SMALL = [
    "population_size=4",
    "tasks_per_member=1",
    "generations=2",
    "checkpoint_every=2",
    "unroll.truncation_length=5",
    "unroll.min_length=10",
    "unroll.max_length=20",
    "task_family.batch_size=16",
    "evaluation.steps=5",
    "evaluation.num_tasks=1",
    "evaluation.every=2",
    "evaluation.meta_loss_every=2",
    "progress=false",
]
ARCHS = ["celo2", "celo2_base", "celo", "small_fc_lopt", "mulo", "adam_hparams"]
STRATEGIES = [
    ["strategy=pes"],
    ["strategy=nres"],
    ["strategy=open_es"],
    ["strategy=cma_es"],
    ["strategy=sep_cma_es"],
    ["strategy=evosax", "strategy.algorithm=SNES"],
]


def generations_logged(run_dir) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["generation"] for r in rows if "fitness/mean" in r]


def one_update_is_finite(path, arch):
    opt = evolopt.load_optimizer(path, arch=arch)
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    updates, _ = opt.update(grads, opt.init(params), params, loss=jnp.array(1.0))
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
    assert optax.tree.norm(updates) > 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_meta_trains_and_exports(tmp_path, arch):
    run_dir = tmp_path / arch
    assert main([f"arch={arch}", *SMALL, f"run_dir={run_dir}"]) == 0
    assert generations_logged(run_dir) == [1, 2]
    one_update_is_finite(run_dir / "theta.npz", arch)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s[-1].split("=")[-1])
def test_every_strategy_meta_trains_on_the_default_task(tmp_path, strategy):
    run_dir = tmp_path / "run"  # adam_hparams: the cheapest theta to compile; the matrix above covers the archs
    assert main([*strategy, "arch=adam_hparams", *SMALL, f"run_dir={run_dir}"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fitness = [r["fitness/mean"] for r in rows if "fitness/mean" in r]
    assert len(fitness) == 2 and all(np.isfinite(fitness))

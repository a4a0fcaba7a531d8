"""Where meta-training starts (`theta_init`): Celo2's Muon theta, warm starts from files, bad input."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from evolopt.architectures.celo2 import momentum_theta, scale_by_celo2
from evolopt.config import load_config
from evolopt.export import save_theta_file
from evolopt.loop import build, initial_theta
from evolopt.registry import ARCHITECTURES, ConfigError

KEY = jax.random.key(0)


def _grads(n: int, shapes: dict) -> list[dict]:
    keys = jax.random.split(jax.random.key(1), n)
    return [
        {k: jax.random.normal(jax.random.fold_in(key, i), s) for i, (k, s) in enumerate(shapes.items())} for key in keys
    ]


def _unit_rms(x: jax.Array) -> jax.Array:
    return x / jnp.sqrt(jnp.mean(jnp.square(x)))


def assert_is_optax_muon(ours) -> None:
    """Independent reference: optax's Muon (momentum 0.9, no Nesterov). Its step has another
    per-tensor scale (trace momentum, shape factor); Celo2 normalises every step to unit RMS."""
    shapes = {"w_wide": (6, 9), "w_tall": (11, 4)}
    params = {k: jnp.ones(s) for k, s in shapes.items()}
    dims = {k: MuonDimensionNumbers(reduction_axis=0, output_axis=1) for k in shapes}
    ref = scale_by_muon(beta=0.9, nesterov=False, weight_dimension_numbers=dims)
    s_ours, s_ref = ours.init(params), ref.init(params)
    for g in _grads(4, shapes):
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_ref, s_ref = ref.update(g, s_ref, params)
        for k in shapes:
            np.testing.assert_allclose(u_ours[k], _unit_rms(u_ref[k]), rtol=2e-3, atol=2e-4)


def test_celo2_at_its_muon_theta_is_optax_muon():
    assert_is_optax_muon(scale_by_celo2(momentum_theta()))


@pytest.mark.parametrize("hidden_size, hidden_layers", [(2, 1), (8, 2), (5, 3)])
def test_momentum_theta_passes_momentum_through_any_depth(hidden_size, hidden_layers):
    # Celo2-base (no orthogonalisation) at this theta: the 0.9 EMA of g, unit RMS per tensor.
    shapes = {"w": (5, 3), "b": (7,)}
    params = {k: jnp.zeros(s) for k, s in shapes.items()}
    tx = scale_by_celo2(momentum_theta(None, hidden_size, hidden_layers), orthogonalize=False)
    state, m = tx.init(params), {k: np.zeros(s) for k, s in shapes.items()}
    for g in _grads(3, shapes):
        u, state = tx.update(g, state, params)
        for k in shapes:
            m[k] = 0.9 * m[k] + 0.1 * np.asarray(g[k])
            np.testing.assert_allclose(u[k], m[k] / np.sqrt(np.mean(m[k] ** 2)), rtol=1e-5, atol=1e-6)


def test_momentum_theta_rejects_sizes_that_cannot_carry_a_sign():
    with pytest.raises(ValueError, match="hidden_size >= 2"):
        momentum_theta(None, 1, 2)


def test_initial_theta_named_random_and_warm_start(tmp_path):
    celo2 = ARCHITECTURES.build("celo2")
    same = jax.tree.map(np.array_equal, initial_theta(celo2, "muon", KEY), momentum_theta())
    assert all(jax.tree.leaves(same))
    same = jax.tree.map(np.array_equal, initial_theta(celo2, "random", KEY), celo2.init_theta(KEY))
    assert all(jax.tree.leaves(same))
    # A warm start takes the file's theta exactly (not its hyperparameters).
    theta = celo2.init_theta(jax.random.key(7))
    path = save_theta_file(tmp_path / "t.npz", theta, "celo2", {**celo2.hparams, "learning_rate": 0.5})
    same = jax.tree.map(np.array_equal, initial_theta(celo2, str(path), KEY), theta)
    assert all(jax.tree.leaves(same))
    # ... from a run dir too (its theta.npz).
    shutil.copy(path, tmp_path / "theta.npz")
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, initial_theta(celo2, str(tmp_path), KEY), theta)))


def test_initial_theta_refuses_other_archs_shapes_and_names(tmp_path):
    small = ARCHITECTURES.build("small_fc_lopt", hidden_size=4)
    path = save_theta_file(tmp_path / "s.npz", small.init_theta(KEY), "small_fc_lopt", small.hparams)
    with pytest.raises(ConfigError, match="holds a 'small_fc_lopt' optimizer, not 'celo2'"):
        initial_theta(ARCHITECTURES.build("celo2"), str(path), KEY)
    with pytest.raises(ConfigError, match="does not fit this run's arch options"):
        initial_theta(ARCHITECTURES.build("small_fc_lopt", hidden_size=8), str(path), KEY)
    with pytest.raises(
        ConfigError, match="theta_init='muon' is not a valid choice for arch 'small_fc_lopt'; valid: random, "
    ):
        initial_theta(small, "muon", KEY)


def test_build_starts_the_strategy_at_theta_init():
    cfg = load_config(["arch=celo2", "strategy=pes", "population_size=4", "theta_init=muon"])
    trainer, theta0 = build(cfg)
    state = trainer.init(KEY, theta0)
    mean = trainer.strategy.mean(state.strategy)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: np.allclose(a, b), mean, momentum_theta())))


def test_bad_theta_init_is_one_line_and_creates_nothing(tmp_path):
    result = run_cli(f"run_dir={tmp_path / 'run'}", "generations=1", "theta_init=nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evolopt.train: error: theta_init='nope' is not a valid choice for arch 'celo2'; "
        "valid: random, muon, a theta file, run dir or pretrained name"
    ]
    assert not (tmp_path / "run").exists()

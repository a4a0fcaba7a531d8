"""celo2_ns_input: Muon at its ``muon`` theta, and a step that is smooth in theta there (Celo2's is not)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from test_theta_init import assert_is_optax_muon

import evolopt
from evolopt.architectures import celo2 as c2
from evolopt.architectures import celo2_ns_input as ni
from evolopt.export import save_theta_file


def test_muon_theta_is_optax_muon_without_nesterov():
    assert_is_optax_muon(c2.scale_by_celo2(ni.muon_theta(), ns_input=True))


def _step_change(scale_fn, theta0, eps):
    """Relative change of the third step when theta moves by eps along a fixed random direction.

    The gradients are nearly rank one (momentum with tiny singular values besides one), the case
    where Newton-Schulz on the MLP's output amplifies a leak of other features."""
    params = {"w": jnp.ones((12, 20))}
    u = jax.random.normal(jax.random.key(1), (12, 1))
    v = jax.random.normal(jax.random.key(2), (1, 20))
    noise = [1e-3 * jax.random.normal(jax.random.key(10 + i), (12, 20)) for i in range(3)]
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(3), x.shape), theta0)

    def last_step(theta):
        tx = scale_fn(theta)
        state = tx.init(params)
        for i in range(3):
            out, state = tx.update({"w": (1.0 + 0.1 * i) * u @ v + noise[i]}, state, params)
        return out["w"]

    base = last_step(theta0)
    moved = last_step(jax.tree.map(lambda a, b: a + eps * b, theta0, direction))
    return float(jnp.linalg.norm(moved - base) / jnp.linalg.norm(base))


def test_step_is_smooth_in_theta_at_muon_while_celo2s_is_sharp():
    smooth = [_step_change(lambda t: c2.scale_by_celo2(t, ns_input=True), ni.muon_theta(), e) for e in (1e-3, 1e-4)]
    sharp = [_step_change(c2.scale_by_celo2, c2.momentum_theta(), e) for e in (1e-3, 1e-4)]
    # Linear response: 10x smaller perturbation, 10x smaller change (first order, small).
    assert smooth[0] < 0.1 and 8 < smooth[0] / smooth[1] < 12
    # Celo2 at Muon: a 1e-4 perturbation already moves the step by O(1) (Newton-Schulz on the output).
    assert sharp[1] > 0.1 and sharp[1] > 50 * smooth[1]


def test_random_theta_has_a_31st_input_block_and_round_trips_through_a_theta_file(tmp_path):
    lopt = evolopt.architectures.celo2_ns_input.celo2_ns_input_arch()
    theta = lopt.init_theta(jax.random.key(0))
    leaf = theta["ff_mod_stack"]["~"]
    assert leaf["w0__14"].shape == (1, 8) and sum(leaf[f"w0__{i}"].shape[0] for i in range(15)) == 31
    path = save_theta_file(tmp_path / "t.npz", theta, "celo2_ns_input", {})
    opt = evolopt.load_optimizer(path)
    params = {"k": jnp.ones((5, 3)), "b": jnp.zeros(3)}
    ref = lopt.optimizer(theta)
    g = {"k": jnp.arange(15.0).reshape(5, 3) / 7, "b": jnp.ones(3)}
    u1, _ = opt.update(g, opt.init(params), params)
    u2, _ = ref.update(g, ref.init(params), params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

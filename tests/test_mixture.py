"""A mixture of families with different models (``task_family=mixture``, separate layouts).

The reference for member ``m`` is its own model trained alone: ``f_m.init_params`` and
``f_m.loss`` on ``f_m``'s params only, the optimizer built for those params only, on the
batches the mixture draws for ``m``. The mixture trains the tuple of all members' params under
``vmap`` (where ``lax.switch`` evaluates every branch); member ``m``'s slice of it must follow
the reference step for step, and its loss must be the member's own divided by its scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import evolopt.architectures  # noqa: F401
import evolopt.task_families  # noqa: F401
from evolopt.architectures.baselines import baseline
from evolopt.registry import ARCHITECTURES, TASK_FAMILIES
from evolopt.task_families.mixture import build_member

MEMBERS = [
    {"name": "image_mlp", "datasets": ["digits"], "hidden": [8], "batch_size": 16},
    {"name": "regression", "input_dim": 5, "hidden": [6, 6], "n_train": 64, "n_valid": 32, "batch_size": 16},
    {"name": "quadratic", "dim": 7},
]
STEPS = 6


def _optimizer(arch: str) -> optax.GradientTransformationExtraArgs:
    if arch == "adam":
        return baseline("adam", 0.01).optimizer({})
    lopt = ARCHITECTURES.build(arch, learning_rate=0.01)
    return lopt.optimizer(lopt.init_theta(jax.random.key(3)))  # a random rule: every channel matters


def _train(params, loss_fn, batch_fn, opt, key):
    """STEPS optimizer steps in one scan: (normalised losses, final params)."""

    def step(carry, t):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, batch_fn(jax.random.fold_in(key, t)))
        updates, state = opt.update(grads, state, params, loss=loss, num_steps=STEPS)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(STEPS))
    return losses, params


def _mixture_run(mix, opt, task, key):
    """The mixture's params (every member's) trained on the mixture's loss and batches."""
    params = mix.init_params(key, task)
    return _train(params, lambda p, b: mix.loss(p, task, b), lambda k: mix.sample_batch(k, task), opt, key)


def _alone_run(mix, fam, m, opt, task, key):
    """Member ``m``'s model alone, on the batches the mixture draws for it. The mixture reports
    the loss over the member's scale (what its optimizer's ``loss`` input sees) with the
    gradient of the loss itself; so does this reference."""
    params = fam.init_params(key, task["tasks"][m])

    def loss(p, b):
        raw = fam.loss(p, task["tasks"][m], b)
        return raw + jax.lax.stop_gradient(raw / fam.loss_scale - raw)

    return _train(params, loss, lambda k: mix.sample_batch(k, task)[m], opt, key)


@pytest.mark.parametrize("arch", ["celo2_ns_input", "adam", "mulo"])  # mulo: muP scales per member
def test_each_member_trains_exactly_as_alone(arch):
    mix = TASK_FAMILIES.build("mixture", members=MEMBERS)
    fams = [build_member(spec, m) for m, spec in enumerate(MEMBERS)]
    opt = _optimizer(arch)
    keys = jax.random.split(jax.random.key(11), len(MEMBERS))
    tasks = [mix.sample_task(k) | {"member": jnp.int32(m)} for m, k in enumerate(keys)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *tasks)
    # one task per member, vmapped as in meta-training: lax.switch becomes a select
    losses, params = jax.jit(jax.vmap(lambda t, k: _mixture_run(mix, opt, t, k)))(stacked, keys)
    for m, fam in enumerate(fams):
        ref_losses, ref_params = jax.jit(lambda t, k, fam=fam, m=m: _alone_run(mix, fam, m, opt, t, k))(
            tasks[m], keys[m]
        )
        np.testing.assert_allclose(losses[m], ref_losses, rtol=2e-5, atol=1e-6, err_msg=f"{arch}, member {m}")
        mine = jax.tree.map(lambda x, m=m: x[m], params[m])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), mine, ref_params)
    assert float(jnp.max(jnp.abs(losses[0] - losses[0][0]))) > 0, "the reference must move"


def test_separate_layouts_hold_every_members_params_and_draw_members_by_weight():
    mix = TASK_FAMILIES.build("mixture", members=MEMBERS[:2], weights=[1, 3])
    task = mix.sample_task(jax.random.key(0))
    shapes = [jax.tree.map(jnp.shape, p) for p in mix.init_params(jax.random.key(1), task)]
    alone = [
        jax.tree.map(jnp.shape, build_member(spec, m).init_params(jax.random.key(1), task["tasks"][m]))
        for m, spec in enumerate(MEMBERS[:2])
    ]
    assert shapes == alone
    members = jax.vmap(lambda k: mix.sample_task(k)["member"])(jax.random.split(jax.random.key(2), 2000))
    assert abs(float(jnp.mean(members == 1)) - 0.75) < 0.04

"""Refuse, before anything is written, a task family on which an architecture learns nothing.

Celo2, for example, routes 1-D parameters to Adam: on a family whose parameters are
all vectors (``quadratic``) no parameter reaches the learned rule, and the meta-loss
is the same at every generation. The test is direct and forward-only: on a sampled task (up to three), are two
updates with random gradients bit-identical at theta and at a randomly perturbed
theta? (A derivative through the update would say the same, but differentiating a
Newton-Schulz rule costs far more memory and compile time than the check is worth.)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from evolopt.registry import ConfigError


def reaches_learned_rule(lopt: Any, family: Any, theta: Any, key: jax.Array) -> bool:
    """True if some update on a task of ``family`` depends on ``theta``."""
    if not jax.tree.leaves(theta):
        return True  # nothing to learn (a baseline): nothing to refuse
    k_task, k_params, k_grad, k_w = jax.random.split(key, 4)
    task = family.sample_task(k_task)
    params = family.init_params(k_params, task)
    leaves, treedef = jax.tree.flatten(params)
    grads = treedef.unflatten(
        [jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(jax.random.split(k_grad, len(leaves)), leaves)]
    )

    @jax.jit
    def updates(th):
        opt = lopt.optimizer(th)
        state = opt.init(params)
        u1, state = opt.update(grads, state, params, loss=jnp.float32(1.0), num_steps=100)
        u2, _ = opt.update(grads, state, params, loss=jnp.float32(0.5), num_steps=100)
        return u1, u2

    th_leaves, th_def = jax.tree.flatten(theta)
    noise = jax.random.split(k_w, len(th_leaves))
    other = th_def.unflatten(
        [x + 0.1 * (1 + jnp.abs(x)) * jax.random.normal(k, x.shape) for k, x in zip(noise, th_leaves)]
    )
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), updates(theta), updates(other))
    return not all(jax.tree.leaves(same))


def check_learnable(lopt: Any, family: Any, theta: Any, arch_options: dict | None = None) -> None:
    """ConfigError (one line: why, what to change) if no parameter of ``family`` reaches ``lopt``'s learned rule."""
    # a few sampled tasks: a mixture's members may differ in shape (refuse only if none reaches the rule)
    if any(reaches_learned_rule(lopt, family, theta, jax.random.key(i)) for i in range(3)):
        return
    why = "its update does not depend on theta for any of this family's parameters"
    fix = "choose a task family with weight matrices (e.g. task_family=image_mlp) or arch=small_fc_lopt"
    if "route_1d_to_adam" in (arch_options or {}):
        why = f"arch '{lopt.name}' routes 1-D parameters to Adam and all of this family's parameters are 1-D"
        fix = f"set arch.route_1d_to_adam=false, {fix}"
    raise ConfigError(
        f"task_family '{family.name}' cannot be learned on by arch '{lopt.name}': {why}, so meta-training "
        f"would change nothing; {fix}"
    )

"""Synthetic quadratics: cheap tasks for fast tests and strategy research.

Task: ``f(x) = 0.5 * sum_i h_i (x_i - c_i)^2 + noise``, with curvatures ``h``
log-uniform in ``[1/condition, 1]`` and centres ``c ~ N(0, 1)``; the start is
``x0 = 0``, so the initial loss is ``0.5 sum h c^2`` and ``loss_scale`` is its
expectation. Minibatch noise: the gradient sees ``c + noise_std * eps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily
from evolopt.registry import register_task_family


@register_task_family("quadratic")
def quadratic(*, dim: int = 10, condition: float = 100.0, noise_std: float = 0.0) -> TaskFamily:
    """Ill-conditioned quadratic bowls of dimension ``dim``."""

    def sample_task(key):
        k_h, k_c = jax.random.split(key)
        log_h = jax.random.uniform(k_h, (dim,), minval=-jnp.log(condition), maxval=0.0)
        return {"h": jnp.exp(log_h), "c": jax.random.normal(k_c, (dim,))}

    def init_params(key, task):
        del key
        return {"x": jnp.zeros(dim)}

    def sample_batch(key, task):
        return {"eps": noise_std * jax.random.normal(key, (dim,))}

    def loss(params, task, batch):
        return 0.5 * jnp.sum(task["h"] * jnp.square(params["x"] - task["c"] - batch["eps"]))

    # E[0.5 sum h c^2] = 0.5 * dim * E[h]; E[h] for log-uniform on [1/k, 1] is (1 - 1/k) / ln k.
    mean_h = (1 - 1 / condition) / jnp.log(condition) if condition > 1 else 1.0
    return TaskFamily("quadratic", sample_task, init_params, sample_batch, loss, float(0.5 * dim * mean_h))

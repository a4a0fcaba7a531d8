"""Shifted, scaled N-dimensional Rosenbrock functions: a cheap non-convex valley.

Task: offset ``c ~ N(0, offset_std^2 I)``, valley steepness ``b`` log-uniform in
``[b_low, b_high]`` (the classic function has ``b = 100``) and start ``u0 =
(-1.2, 1, -1.2, 1, ...) + N(0, start_std^2)`` (the classic start, jittered).
With ``u = x - c``:

    R_b(u) = sum_{i<N} [ b (u_{i+1} - u_i^2)^2 + (1 - u_i)^2 ]      (minimum 0 at u = 1)
    loss(x) = R_b(x - c + noise_std * eps) / R_b(u0)

and the params start at ``x0 = c + u0``. Dividing by the task's initial value
makes the initial loss exactly 1 for every task, so ``loss_scale = 1`` *is* the
initial loss (the meta-loss is the fraction of the initial loss left). The
offset moves the minimum to ``x* = c + 1``, so parameter magnitudes differ
across tasks. Minibatch noise: ``eps ~ N(0, I)`` shifts where the loss is read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily
from evolopt.registry import ConfigError, register_task_family


def rosenbrock_value(u: jax.Array, b: jax.Array) -> jax.Array:
    """``sum_i b (u_{i+1} - u_i^2)^2 + (1 - u_i)^2`` over the last axis."""
    return jnp.sum(b * jnp.square(u[1:] - u[:-1] ** 2) + jnp.square(1.0 - u[:-1]))


@register_task_family("rosenbrock")
def rosenbrock(
    *,
    dim: int = 10,
    b_low: float = 1.0,
    b_high: float = 100.0,
    offset_std: float = 1.0,
    start_std: float = 0.1,
    noise_std: float = 0.0,
) -> TaskFamily:
    """Rosenbrock valleys of dimension ``dim`` with sampled offsets and steepness."""
    if dim < 2:
        raise ConfigError(f"task_family.dim={dim} must be >= 2")
    if not 0 < b_low <= b_high:
        raise ConfigError(f"task_family.b_low={b_low}, b_high={b_high} need 0 < b_low <= b_high")
    classic = jnp.where(jnp.arange(dim) % 2 == 0, -1.2, 1.0)

    def sample_task(key):
        k_c, k_b, k_u = jax.random.split(key, 3)
        b = jnp.exp(jax.random.uniform(k_b, (), minval=jnp.log(b_low), maxval=jnp.log(b_high)))
        u0 = classic + start_std * jax.random.normal(k_u, (dim,))
        return {"c": offset_std * jax.random.normal(k_c, (dim,)), "b": b, "u0": u0, "r0": rosenbrock_value(u0, b)}

    def init_params(key, task):
        del key
        return {"x": task["c"] + task["u0"]}

    def sample_batch(key, task):
        return {"eps": noise_std * jax.random.normal(key, (dim,))}

    def loss(params, task, batch):
        return rosenbrock_value(params["x"] - task["c"] + batch["eps"], task["b"]) / task["r0"]

    return TaskFamily("rosenbrock", sample_task, init_params, sample_batch, loss, loss_scale=1.0)

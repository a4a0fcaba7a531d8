"""A complete user task family, registered as ``task_family=my_linear_regression``.

Use it without touching evolopt:

    python -m evolopt.train plugins=[tests.plugin_example.my_tasks] task_family=my_linear_regression \\
        task_family.dim=16 run_dir=runs/linreg

Task: noisy linear regression. A task draws true weights ``w* ~ N(0, I/dim)``; a
batch is ``x ~ N(0, I)`` of shape ``[batch_size, dim]`` with targets
``y = x w* + noise_std * eps``. The model ``y_hat = x W + b`` starts at ``W = 0, b = 0``
and is trained on the mean squared error ``mean (y_hat - y)^2``. At init the
expected loss is ``E|w*|^2 + noise_std^2 = 1 + noise_std^2``: that is ``loss_scale``,
so an untrained model scores ~1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily
from evolopt.registry import ConfigError, register_task_family


@register_task_family("my_linear_regression")
def my_linear_regression(*, dim: int = 8, batch_size: int = 32, noise_std: float = 0.1) -> TaskFamily:
    """Keyword-only arguments with defaults are the options ``task_family.<name>=...``."""
    if dim < 1 or batch_size < 1:
        raise ConfigError(f"task_family.dim={dim} and batch_size={batch_size} must be >= 1")

    def sample_task(key: jax.Array) -> dict:
        # A task is a pytree of arrays with static shapes; antithetic partners share its key.
        return {"w": jax.random.normal(key, (dim,)) / jnp.sqrt(dim)}

    def init_params(key: jax.Array, task: dict) -> dict:
        del key, task
        # flax-style names (kernel/bias) let an architecture's routing rules match them
        return {"dense_0": {"kernel": jnp.zeros((dim, 1)), "bias": jnp.zeros(1)}}

    def sample_batch(key: jax.Array, task: dict) -> dict:
        k_x, k_e = jax.random.split(key)
        x = jax.random.normal(k_x, (batch_size, dim))
        return {"x": x, "y": x @ task["w"] + noise_std * jax.random.normal(k_e, (batch_size,))}

    def loss(params: dict, task: dict, batch: dict) -> jax.Array:
        pred = batch["x"] @ params["dense_0"]["kernel"][:, 0] + params["dense_0"]["bias"][0]
        return jnp.mean(jnp.square(pred - batch["y"]))

    return TaskFamily(
        "my_linear_regression",
        sample_task,
        init_params,
        sample_batch,
        loss,
        loss_scale=1.0 + noise_std**2,
        valid_batch=sample_batch,  # fresh samples are held-out data here
    )

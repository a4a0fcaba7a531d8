"""What a task family is: pure functions that sample, initialise and score inner tasks.

Everything a task needs at run time lives in JAX arrays, so the inner loop can
vmap over members x tasks and sample batches inside jit. A *task* is a pytree of
arrays with static shapes (e.g. which dataset, a scale); a family draws tasks
from a key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Task = Any
Params = Any
Batch = Any


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """A distribution over inner training problems.

    Attributes:
      name: registry name.
      sample_task: ``key -> task``.
      init_params: ``(key, task) -> params`` of the model to train.
      sample_batch: ``(key, task) -> batch`` of training data.
      loss: ``(params, task, batch) -> scalar`` training loss.
      loss_scale: the meta-loss is ``min(loss / loss_scale, clip)``; e.g. log(classes)
        for classifiers, so an untrained model scores ~1.
      valid_batch: optional ``(key, task) -> batch`` from held-out data.
      unaugmented: for a family wrapped by :mod:`task_families.augment`, the plain
        family it wraps (evaluate a learned optimizer on that one); else None.
    """

    name: str
    sample_task: Callable[[jax.Array], Task]
    init_params: Callable[[jax.Array, Task], Params]
    sample_batch: Callable[[jax.Array, Task], Batch]
    loss: Callable[[Params, Task, Batch], jax.Array]
    loss_scale: float = 1.0
    valid_batch: Callable[[jax.Array, Task], Batch] | None = None
    unaugmented: TaskFamily | None = None


def normalized_loss(loss: jax.Array, scale: float, clip: float) -> jax.Array:
    """``min(loss / scale, clip)``, with NaN/inf scored as ``clip`` (the worst value)."""
    value = loss / scale
    return jnp.where(jnp.isfinite(value), jnp.minimum(value, clip), clip)


def require_positive(**sizes: int | list) -> None:
    """One-line ConfigError for any size (or entry of a list of sizes) below 1."""
    from evolopt.registry import ConfigError

    for key, value in sizes.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) < 1:
                raise ConfigError(f"task_family.{key}={v} must be >= 1")

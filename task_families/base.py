"""What a task family is: pure functions that sample, initialise and score inner tasks.

Everything a task needs at run time lives in JAX arrays, so the inner loop can
vmap over members x tasks and sample batches inside jit. A *task* is a pytree of
arrays with static shapes (e.g. which dataset, a scale); a family draws tasks
from a key.

**Task state** (optional). Some problems carry mutable state from one training
step to the next that is neither params nor task, e.g. the environments of an RL
agent, whose episodes span many PPO updates. A family with state gives
``init_task_state(key, task) -> s_0`` and ``step_batch(key, task, params, s_t) ->
(batch_t, s_{t+1})``; the inner loop keeps ``s_t`` in its per-trajectory state,
re-initialises it whenever a new trajectory starts, and calls ``step_batch``
instead of ``sample_batch``. ``sample_batch`` stays the stateless way to get a
batch (e.g. from fresh environments). Stateless families give neither and pay
nothing: their state is the empty pytree ``()``, and :meth:`TaskFamily.next_batch`
is ``sample_batch``.
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
TaskState = Any


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
      init_task_state: optional ``(key, task) -> state``; see the module docstring.
      step_batch: optional ``(key, task, params, state) -> (batch, state)``; given
        together with ``init_task_state``.
      batch_size: the number of examples ``B`` of a batch, for a family whose batch is a
        dict and whose loss honours per-example weights ``batch["weights"]`` (shape
        ``[B]``, see :func:`example_mean`); None if it does not. Batch-size
        augmentation needs it.
    """

    name: str
    sample_task: Callable[[jax.Array], Task]
    init_params: Callable[[jax.Array, Task], Params]
    sample_batch: Callable[[jax.Array, Task], Batch]
    loss: Callable[[Params, Task, Batch], jax.Array]
    loss_scale: float = 1.0
    valid_batch: Callable[[jax.Array, Task], Batch] | None = None
    unaugmented: TaskFamily | None = None
    init_task_state: Callable[[jax.Array, Task], TaskState] | None = None
    step_batch: Callable[[jax.Array, Task, Params, TaskState], tuple[Batch, TaskState]] | None = None
    batch_size: int | None = None

    def __post_init__(self):
        if (self.init_task_state is None) != (self.step_batch is None):
            raise ValueError(f"task family '{self.name}': give both init_task_state and step_batch, or neither")

    @property
    def stateful(self) -> bool:
        return self.step_batch is not None

    def initial_task_state(self, key: jax.Array, task: Task) -> TaskState:
        """``init_task_state(key, task)``; ``()`` (no leaves, no work) for a stateless family."""
        return () if self.init_task_state is None else self.init_task_state(key, task)

    def next_batch(self, key: jax.Array, task: Task, params: Params, state: TaskState) -> tuple[Batch, TaskState]:
        """One training step's batch and the task state after it: ``step_batch``, or
        ``(sample_batch(key, task), state)`` for a stateless family."""
        if self.step_batch is None:
            return self.sample_batch(key, task), state
        return self.step_batch(key, task, params, state)


def normalized_loss(loss: jax.Array, scale: float, clip: float) -> jax.Array:
    """``min(loss / scale, clip)``, with NaN/inf scored as ``clip`` (the worst value)."""
    value = loss / scale
    return jnp.where(jnp.isfinite(value), jnp.minimum(value, clip), clip)


def log_uniform_int(key: jax.Array, low: int, high: int) -> jax.Array:
    """int32 ``floor(exp(U[log low, log(high + 1)]))`` clipped to ``[low, high]``: log-uniform integers
    (unroll lengths, batch sizes)."""
    t = jnp.exp(jax.random.uniform(key, (), minval=jnp.log(low), maxval=jnp.log(high + 1))).astype(jnp.int32)
    return jnp.clip(t, low, high)


def example_mean(per_example: jax.Array, batch: Batch) -> jax.Array:
    """Mean of per-example losses ``l [B, ...]`` (trailing axes, e.g. tokens, are averaged too).

    With per-example weights ``w = batch["weights"]`` (shape ``[B]``; batch-size
    augmentation sets ``w_i = 1`` for the ``b`` active examples, 0 for the rest) it is
    ``sum_i w_i sum_j l_ij / (n sum_i w_i)`` for ``n`` trailing entries per example,
    i.e. the plain mean over the active examples; without weights, ``mean(l)``.
    """
    weights = batch.get("weights") if isinstance(batch, dict) else None
    if weights is None:
        return jnp.mean(per_example)
    w = weights.reshape(weights.shape + (1,) * (per_example.ndim - 1))
    n = per_example.size // per_example.shape[0]
    return jnp.sum(w * per_example) / (n * jnp.sum(weights))


def require_positive(**sizes: int | list) -> None:
    """One-line ConfigError for any size (or entry of a list of sizes) below 1."""
    from evolopt.registry import ConfigError

    for key, value in sizes.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) < 1:
                raise ConfigError(f"task_family.{key}={v} must be >= 1")

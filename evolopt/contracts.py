"""The contracts a plug-in implements: read this module first.

evolopt's core (the generation step, the trainer, evaluation) knows strategies and
task families only through the types here. The built-ins in ``evolopt.strategies``
and ``evolopt.task_families`` implement them exactly as a third-party package does
and are loaded by the same mechanism (``evolopt.plugins`` entry points, or
``plugins=[module]``; see :mod:`evolopt.registry` for the decorators):

* :class:`TaskFamily`: a distribution over inner training problems, as pure
  functions that sample, initialise and score tasks.
* :class:`Strategy`: the outer optimiser, ``init / ask / tell / mean`` over theta
  pytrees. ``tell`` receives each member's :class:`TruncationLoss` on each of its
  tasks; an estimator that needs one number per member reduces it with
  :meth:`Strategy.fitness`.
* :func:`normalized_loss`: how a raw inner loss becomes a meta-loss.

**Task families.** Everything a task needs at run time lives in JAX arrays, so the inner loop can
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
from flax import struct

from evolopt.registry import ConfigError

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
      unaugmented: for a family wrapped by :mod:`evolopt.augment`, the plain
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


@jax.tree_util.register_pytree_with_keys_class
class SeparateModels(tuple):
    """The params of several independent models side by side: a tuple whose entry ``m`` is
    model ``m``'s whole params pytree (a mixture of families with different models).

    It flattens like a tuple (paths ``[0]``, ``[1]``, ...) and keeps its type through
    ``jax.tree.map``, ``grad``, ``vmap`` and checkpoints, so a rule whose per-tensor scales
    depend on where a tensor sits in its model (``mulo``'s muP multipliers) can tell the
    models apart and treat each as if it were trained alone.
    """

    def tree_flatten_with_keys(self):
        return [(jax.tree_util.SequenceKey(i), x) for i, x in enumerate(self)], None

    def tree_flatten(self):
        return tuple(self), None

    @classmethod
    def tree_unflatten(cls, aux: None, children) -> SeparateModels:
        del aux
        return cls(children)


@struct.dataclass
class TruncationLoss:
    """Normalised meta-loss of one truncation, split at a reset.

    ``before + after`` is the mean normalised loss over the K steps; ``reset`` says
    whether a new trajectory started during them; ``nonfinite`` counts steps
    whose loss was NaN/inf (scored as the clip value).
    """

    before: jax.Array
    after: jax.Array
    reset: jax.Array
    nonfinite: jax.Array

    @property
    def total(self) -> jax.Array:
        return self.before + self.after


class Strategy:
    """The outer optimiser the generation step drives (evosax minimises; so do we).

    One generation is ``population, state = ask(key, state)``; every member trains
    its K tasks; ``state, metrics = tell(key, population, losses, state)`` with
    ``losses`` a :class:`TruncationLoss` of ``[N, K]`` leaves. Member ``i`` and
    ``i + N/2`` are antithetic partners and share their tasks. Subclasses set
    ``population_size`` and implement the four methods; the generation step is
    jitted, so all four must be pure JAX functions of their arguments.
    """

    population_size: int

    def init(self, key: jax.Array, theta0: Any) -> Any:
        """The strategy state whose search distribution is centred at ``theta0``."""
        raise NotImplementedError

    def ask(self, key: jax.Array, state: Any) -> tuple[Any, Any]:
        """``(population, state)``: N thetas (a pytree with a leading [N] axis)."""
        raise NotImplementedError

    def tell(self, key: jax.Array, population: Any, losses: TruncationLoss, state: Any) -> tuple[Any, dict]:
        """``(state, metrics)`` after the population scored ``losses`` ([N, K] leaves)."""
        raise NotImplementedError

    def mean(self, state: Any) -> Any:
        """The theta to report, evaluate and export."""
        raise NotImplementedError

    @staticmethod
    def fitness(losses: TruncationLoss) -> jax.Array:
        """Scalar fitness per member, ``[N]``: mean over its tasks of the truncation's meta-loss.

        The one definition: the generation step logs it, and the evosax adapter
        (``evolopt.strategies.base.EvosaxStrategy``) hands it to evosax as the fitness to minimise.
        """
        return jnp.mean(losses.total, axis=-1)


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
    for key, value in sizes.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) < 1:
                raise ConfigError(f"task_family.{key}={v} must be >= 1")

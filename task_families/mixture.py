"""A weighted mixture of task families, with the same or with different models.

``task_family=mixture task_family.members=[{name:quadratic,dim:8},{name:rosenbrock,dim:8}]
task_family.weights=[3,1]``: each task first draws member ``m`` with probability
``w_m / sum(w)``, then a task of that member.

The inner loop vmaps one params pytree over all tasks, so the mixture's params must have one
layout:

- *shared*: when every member's ``init_params`` returns the same pytree (structure, shapes,
  dtypes), the params are that pytree and the member's model reads it.
- *separate*: otherwise (an MLP and a conv net, MLPs of different widths, an LM and a
  regression) the params are every member's params side by side
  (:class:`evolopt.contracts.SeparateModels`, a tuple), and member ``m``'s loss reads only
  ``params[m]``. The other members' gradients are then exactly zero and, for an optimizer
  that updates each tensor from that tensor's own gradient history, the trajectory of
  ``params[m]`` is the one member ``m``'s model has trained alone (tests/test_mixture.py).
  ``mulo``, whose muP scales depend on where a tensor sits in its model, computes them per
  member from the ``SeparateModels`` type, so the same holds for it. The other members'
  params also take optimizer steps (from zero gradients) that no loss reads.
  A step costs the sum of the members' model *and optimizer* costs.

In both layouts the loss value an optimizer sees (Celo's learned schedule reads it) is the
member's loss over its ``loss_scale`` (see Normalisation below).

Tasks, batches and task states (of members that keep one, e.g. RL envs) hold
*every* member's task/batch/state (their pytrees differ), and
the member's functions are chosen with ``lax.switch``; under vmap that evaluates
all members, so a step costs the sum of the members' costs.

Normalisation: each member has its own ``loss_scale`` ``c_m``. The mixture
returns a loss whose value is ``loss_m / c_m`` and whose gradient is
``grad loss_m`` (``loss_m - sg(loss_m) + sg(loss_m / c_m)``), with
``loss_scale = 1``: the meta-loss of every member is normalised as it would be
alone, and the optimizer trains on the members' own losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from evolopt.contracts import SeparateModels, TaskFamily
from evolopt.registry import TASK_FAMILIES, ConfigError, check_type, register_task_family
from evolopt.task_families.ppo import with_meta_value


def build_member(spec: Any, index: int) -> TaskFamily:
    if not hasattr(spec, "keys") or "name" not in spec:
        raise ConfigError(
            f"task_family.members[{index}]={spec!r} must be a mapping with a 'name', e.g. {{name: quadratic, dim: 8}}"
        )
    options = {str(k): v for k, v in dict(spec).items() if k != "name"}
    if spec["name"] == "mixture":
        raise ConfigError("task_family.members cannot contain another mixture")
    return TASK_FAMILIES.build(str(spec["name"]), **options)


def _signature(family: TaskFamily) -> Any:
    shapes = jax.eval_shape(
        family.init_params, jax.random.key(0), jax.eval_shape(family.sample_task, jax.random.key(0))
    )
    return jax.tree.structure(shapes), [(x.shape, x.dtype) for x in jax.tree.leaves(shapes)]


@register_task_family("mixture")
def mixture(*, members: list = (), weights: list = ()) -> TaskFamily:
    """Tasks drawn from ``members`` (family configs) with probabilities proportional to ``weights``."""
    if len(members) < 1:
        raise ConfigError("task_family.members is empty; give a list like [{name: quadratic}, {name: rosenbrock}]")
    fams = [build_member(spec, i) for i, spec in enumerate(members)]
    weights = _check_weights(list(weights) or [1.0] * len(fams), len(fams))
    first = _signature(fams[0])
    shared = all(_signature(fam) == first for fam in fams[1:])
    logits = jnp.log(jnp.asarray(weights, jnp.float32))

    def sample_task(key):
        k_m, *keys = jax.random.split(key, len(fams) + 1)
        return {
            "member": jax.random.categorical(k_m, logits),
            "tasks": tuple(f.sample_task(k) for f, k in zip(fams, keys)),
        }

    def init_params(key, task):
        if not shared:  # every member's model, each initialised as it would be alone
            return SeparateModels(f.init_params(key, t) for f, t in zip(fams, task["tasks"]))
        branches = [lambda k, ts, f=f, i=i: f.init_params(k, ts[i]) for i, f in enumerate(fams)]
        return jax.lax.switch(task["member"], branches, key, task["tasks"])

    def loss(params, task, batch):
        branches = [_normalized_member_loss(i, f, shared) for i, f in enumerate(fams)]
        return jax.lax.switch(task["member"], branches, params, task["tasks"], batch)

    name = "mixture(" + ",".join(f.name for f in fams) + ")"
    train, valid = _batches(fams, "train"), _batches(fams, "valid")
    return TaskFamily(name, sample_task, init_params, train, loss, 1.0, valid, **_task_states(fams))


def _check_weights(weights: list, count: int) -> list:
    for w in weights:
        check_type("task_family.weights", w, 1.0)
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"task_family.weights={weights} must be {count} non-negative numbers, not all zero")
    return weights


def _batches(fams: list[TaskFamily], split: str) -> Callable:
    """``(key, task) -> batch``: every member's batch (its valid batch if ``split == "valid"``
    and it has one), as a tuple."""

    def sample(key, task):
        keys = jax.random.split(key, len(fams))
        out = []
        for f, k, t in zip(fams, keys, task["tasks"]):
            fn = f.valid_batch if (split == "valid" and f.valid_batch is not None) else f.sample_batch
            out.append(fn(k, t))
        return tuple(out)

    return sample


def _normalized_member_loss(i: int, f: TaskFamily, shared: bool) -> Callable:
    """Member ``i``'s loss (of ``params[i]`` if the layouts are separate), valued
    ``loss / loss_scale`` with the gradient of ``loss``."""

    def run(p, ts, bs):
        value = f.loss(p if shared else p[i], ts[i], bs[i])
        return with_meta_value(value, value / f.loss_scale)

    return run


def _task_states(fams: list[TaskFamily]) -> dict[str, Callable]:
    """``init_task_state`` / ``step_batch`` over every member's state (like batches, all are
    evaluated under vmap); none if no member keeps one."""
    if not any(f.stateful for f in fams):
        return {}

    def init_task_state(key, task):
        keys = jax.random.split(key, len(fams))
        return tuple(f.initial_task_state(k, t) for f, k, t in zip(fams, keys, task["tasks"]))

    def step_batch(key, task, params, state):
        keys = jax.random.split(key, len(fams))  # the keys sample_batch gives each member
        out = [f.next_batch(k, t, params, s) for f, k, t, s in zip(fams, keys, task["tasks"], state)]
        return tuple(b for b, _ in out), tuple(s for _, s in out)

    return {"init_task_state": init_task_state, "step_batch": step_batch}

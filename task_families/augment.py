"""Task augmentation: the same functions, presented to the optimizer at other scales.

**Weight reparameterisation** (Celo/VeLO's ``ReparamWeightsFamily``). Each task
draws scales ``s`` log-uniform in ``[low, high]`` once; the optimizer sees stored
parameters ``q = p / s`` and the loss is evaluated at ``p = s * q``:

    L_aug(q) = L(s * q)          =>   grad_q L_aug = s * grad_p L(s q)

so the function (and the loss curve of any optimizer that is equivariant to the
scale) is unchanged, while parameter magnitudes move by ``1/s`` and gradient
magnitudes by ``s``: an optimizer must infer its step size from the statistics
it sees. ``level`` picks how many scales: ``global`` (one per task), ``tensor``
(one per parameter array), ``parameter`` (one per entry).

**Init scale**: initial params are multiplied by ``c`` log-uniform in
``[init_scale_low, init_scale_high]`` (a different function at init; off when
both are 1).

The sampled scales live in the task pytree, which is drawn from the task key.
Antithetic partners share that key, so they share the scales. The base task
is drawn from the *same* key as without augmentation, so ``s = 1`` reproduces
the plain family exactly.

Batch-size augmentation is not provided: batch shapes are static under jit,
and masking a max-size batch would need every family's loss to take per-example
weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from evolopt.registry import ConfigError
from task_families.base import TaskFamily

LEVELS = ("none", "global", "tensor", "parameter")


def log_uniform(key: jax.Array, shape: tuple, low: float, high: float) -> jax.Array:
    """``exp(U[log low, log high])``; exactly ``low`` when ``low == high``."""
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(low), maxval=jnp.log(high)))


def _check_range(name: str, low: float, high: float) -> None:
    if not 0 < low <= high:
        raise ConfigError(f"augmentation.{name}_low={low} and {name}_high={high} need 0 < low <= high")


def augment(
    family: TaskFamily,
    reparam: str = "none",
    reparam_low: float = 1e-3,
    reparam_high: float = 1e3,
    init_scale_low: float = 1.0,
    init_scale_high: float = 1.0,
) -> TaskFamily:
    """``family`` with reparameterised weights and/or random init scales (identity if both are off)."""
    if reparam not in LEVELS:
        raise ConfigError(f"unknown augmentation.reparam '{reparam}'; valid choices: {', '.join(LEVELS)}")
    _check_range("reparam", reparam_low, reparam_high)
    _check_range("init_scale", init_scale_low, init_scale_high)
    use_init = not init_scale_low == init_scale_high == 1.0
    if reparam == "none" and not use_init:
        return family
    fam = family

    def scales(key: jax.Array, base_task: Any) -> Any:
        """Per-leaf scales: shape () for global/tensor, the leaf's shape for parameter."""
        shapes = jax.eval_shape(fam.init_params, jax.random.key(0), base_task)
        leaves, treedef = jax.tree.flatten(shapes)
        if reparam == "none":
            return jax.tree.unflatten(treedef, [jnp.ones(()) for _ in leaves])
        if reparam == "global":
            s = log_uniform(key, (), reparam_low, reparam_high)
            return jax.tree.unflatten(treedef, [s for _ in leaves])
        keys = jax.random.split(key, len(leaves))
        shape = (lambda leaf: ()) if reparam == "tensor" else (lambda leaf: leaf.shape)
        return jax.tree.unflatten(treedef, [log_uniform(k, shape(l), reparam_low, reparam_high) for k, l in zip(keys, leaves)])

    def sample_task(key):
        base = fam.sample_task(key)  # same key as the plain family: s = 1 reproduces it
        k_s, k_c = jax.random.split(jax.random.fold_in(key, 0x5CA1E))
        init = log_uniform(k_c, (), init_scale_low, init_scale_high) if use_init else jnp.ones(())
        return {"base": base, "reparam": scales(k_s, base), "init_scale": init}

    def init_params(key, task):
        params = fam.init_params(key, task["base"])
        return jax.tree.map(lambda p, s: p * task["init_scale"] / s, params, task["reparam"])

    def sample_batch(key, task):
        return fam.sample_batch(key, task["base"])

    def loss(params, task, batch):
        true = jax.tree.map(lambda q, s: q * s, params, task["reparam"])
        return fam.loss(true, task["base"], batch)

    valid = None
    if fam.valid_batch is not None:
        valid = lambda key, task: fam.valid_batch(key, task["base"])  # noqa: E731
    tags = ([f"reparam_{reparam}"] if reparam != "none" else []) + (["init_scale"] if use_init else [])
    return dataclasses.replace(
        fam,
        name=f"{fam.name}+{'+'.join(tags)}",
        sample_task=sample_task,
        init_params=init_params,
        sample_batch=sample_batch,
        loss=loss,
        valid_batch=valid,
        unaugmented=fam.unaugmented or fam,
    )


def true_params(params: Any, task: Any) -> Any:
    """The model's parameters ``s * q`` from an augmented family's stored ``q``."""
    return jax.tree.map(lambda q, s: q * s, params, task["reparam"])


def from_config(family: TaskFamily, cfg: Any | None) -> TaskFamily:
    """Apply the run config's ``augmentation:`` section (a mapping; None or missing keys: off)."""
    if cfg is None:
        return family
    cfg = dict(cfg)
    valid = {"reparam", "reparam_low", "reparam_high", "init_scale_low", "init_scale_high"}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ConfigError(f"unknown key 'augmentation.{unknown[0]}'; valid keys at augmentation: {', '.join(sorted(valid))}")
    try:
        numbers = {k: float(cfg[k]) for k in valid - {"reparam"} if k in cfg}
    except (TypeError, ValueError):
        raise ConfigError(f"augmentation ranges must be numbers, got {cfg}") from None
    return augment(family, str(cfg.get("reparam", "none")), **numbers)

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

**Batch size**: each task draws an effective batch size ``b`` log-uniform in
``[batch_min, B]`` (``B`` the family's static ``batch_size``; an integer,
``floor(exp(U[log batch_min, log(B + 1)]))``, clipped to that range). Shapes are
static under jit/vmap, so the family still draws ``B`` examples, and the batch
gets weights ``w_i = [i < b]``; families whose loss honours them
(:func:`evolopt.contracts.example_mean`: image_mlp, image_conv, lm) then score

    L_b = (1/b) sum_{i<b} l_i,

the mean over ``b`` i.i.d. examples, i.e. a batch of size ``b``. Off when
``batch_min = 0``.

The sampled scales and ``b`` live in the task pytree, which is drawn from the
task key. Antithetic partners share that key, so they share them. The base task
is drawn from the *same* key as without augmentation, so ``s = 1`` reproduces
the plain family exactly. A family with task state
(:mod:`evolopt.contracts`) keeps it: the wrapper passes it through, giving
``step_batch`` the true parameters ``s * q``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily, log_uniform_int
from evolopt.registry import ConfigError

BATCH_FAMILIES = "image_mlp, image_conv, lm"  # the built-in families whose loss takes example weights

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
    batch_min: int = 0,
) -> TaskFamily:
    """``family`` with reparameterised weights, random init scales and/or random batch
    sizes (the family itself if all are off)."""
    if reparam not in LEVELS:
        raise ConfigError(f"unknown augmentation.reparam '{reparam}'; valid choices: {', '.join(LEVELS)}")
    _check_range("reparam", reparam_low, reparam_high)
    _check_range("init_scale", init_scale_low, init_scale_high)
    _check_batch_min(family, batch_min)
    use_init = not init_scale_low == init_scale_high == 1.0
    if reparam == "none" and not use_init and batch_min == 0:
        return family

    def sample_task(key):
        base = family.sample_task(key)  # same key as the plain family: s = 1 reproduces it
        k_s, k_c = jax.random.split(jax.random.fold_in(key, 0x5CA1E))
        init = log_uniform(k_c, (), init_scale_low, init_scale_high) if use_init else jnp.ones(())
        shapes = jax.eval_shape(family.init_params, jax.random.key(0), base)
        task = {
            "base": base,
            "reparam": reparam_scales(k_s, shapes, reparam, reparam_low, reparam_high),
            "init_scale": init,
        }
        if batch_min:  # only then: tasks (and checkpoints) without it keep their old layout
            task["batch_size"] = sample_batch_size(jax.random.fold_in(key, 0xBA7C4), batch_min, family.batch_size)
        return task

    tags = (
        ([f"reparam_{reparam}"] if reparam != "none" else [])
        + (["init_scale"] if use_init else [])
        + (["batch_size"] if batch_min else [])
    )
    return dataclasses.replace(
        family,
        name=f"{family.name}+{'+'.join(tags)}",
        sample_task=sample_task,
        unaugmented=family.unaugmented or family,
        **_on_augmented_tasks(family, weighted=bool(batch_min)),
    )


def reparam_scales(key: jax.Array, shapes: Any, level: str, low: float, high: float) -> Any:
    """Per-leaf scales ``s`` for params of ``shapes``, log-uniform in ``[low, high]``: one for all
    leaves (global), one per leaf (tensor, shape ()), one per entry (parameter, the leaf's
    shape); ones for none."""
    leaves, treedef = jax.tree.flatten(shapes)
    if level == "none":
        return jax.tree.unflatten(treedef, [jnp.ones(()) for _ in leaves])
    if level == "global":
        s = log_uniform(key, (), low, high)
        return jax.tree.unflatten(treedef, [s for _ in leaves])
    keys = jax.random.split(key, len(leaves))
    shape = (lambda leaf: ()) if level == "tensor" else (lambda leaf: leaf.shape)
    return jax.tree.unflatten(treedef, [log_uniform(k, shape(leaf), low, high) for k, leaf in zip(keys, leaves)])


def _on_augmented_tasks(fam: TaskFamily, weighted: bool) -> dict[str, Any]:
    """``fam``'s functions of params, batches and task state, taking an augmented task
    ``{"base", "reparam", "init_scale"[, "batch_size"]}`` and stored params ``q``;
    ``weighted``: batches carry the example weights ``w_i = [i < b]``."""

    def init_params(key, task):
        params = fam.init_params(key, task["base"])
        return jax.tree.map(lambda p, s: p * task["init_scale"] / s, params, task["reparam"])

    def sample_batch(key, task):
        batch = fam.sample_batch(key, task["base"])
        if weighted:
            batch = {**batch, "weights": (jnp.arange(fam.batch_size) < task["batch_size"]).astype(jnp.float32)}
        return batch

    def loss(params, task, batch):
        return fam.loss(true_params(params, task), task["base"], batch)

    out = {"init_params": init_params, "sample_batch": sample_batch, "loss": loss, "valid_batch": None}
    if fam.valid_batch is not None:
        out["valid_batch"] = lambda key, task: fam.valid_batch(key, task["base"])
    if fam.stateful:
        out["init_task_state"] = lambda key, task: fam.init_task_state(key, task["base"])
        out["step_batch"] = lambda key, task, params, state: fam.step_batch(
            key, task["base"], true_params(params, task), state
        )
    return out


def sample_batch_size(key: jax.Array, low: int, high: int) -> jax.Array:
    """int32 ``b``: ``floor(exp(U[log low, log(high + 1)]))`` clipped to ``[low, high]``."""
    return log_uniform_int(key, low, high)


def _check_batch_min(family: TaskFamily, batch_min: Any) -> None:
    if isinstance(batch_min, bool) or not isinstance(batch_min, int) or batch_min < 0:
        raise ConfigError(f"augmentation.batch_min={batch_min!r} must be an integer >= 0 (0: off)")
    if batch_min == 0:
        return
    if family.batch_size is None:
        raise ConfigError(
            f"augmentation.batch_min={batch_min} needs a family whose loss takes example weights "
            f"({BATCH_FAMILIES}); '{family.name}' has none"
        )
    if batch_min > family.batch_size:
        raise ConfigError(f"augmentation.batch_min={batch_min} must be <= task_family.batch_size={family.batch_size}")


def true_params(params: Any, task: Any) -> Any:
    """The model's parameters ``s * q`` from an augmented family's stored ``q``."""
    return jax.tree.map(lambda q, s: q * s, params, task["reparam"])


def from_config(family: TaskFamily, cfg: Any | None) -> TaskFamily:
    """Apply the run config's ``augmentation:`` section (a mapping; None or missing keys: off)."""
    if cfg is None:
        return family
    cfg = dict(cfg)
    ranges = {"reparam_low", "reparam_high", "init_scale_low", "init_scale_high"}
    valid = ranges | {"reparam", "batch_min"}
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ConfigError(
            f"unknown key 'augmentation.{unknown[0]}'; valid keys at augmentation: {', '.join(sorted(valid))}"
        )
    try:
        numbers = {k: float(cfg[k]) for k in ranges if k in cfg}
    except (TypeError, ValueError):
        raise ConfigError(f"augmentation ranges must be numbers, got {cfg}") from None
    return augment(family, str(cfg.get("reparam", "none")), **numbers, batch_min=cfg.get("batch_min", 0))

"""Floors of a meta-training generation's components, for ``member_steps.py --breakdown``.

Each share of a generation is set against what the same work takes alone on the same batched tensors:
Newton-Schulz against the same batched Newton-Schulz (``bare_ns``, its FLOPs counted by ``ns_flops``), and
the features + MLP share against its MLP's multiply-adds at this machine's rate for them (``mlp_floor``
over ``mlp_tensors``). Split from ``member_steps.py``, which times the generation itself.
"""

from __future__ import annotations

import math


def ns_flops(shape: tuple[int, ...]) -> int:
    """Matmul FLOPs of ``celo2.newton_schulz`` on a tensor of ``shape``: each matrix of its last two axes
    (a conv kernel has one per leading index), on the wide orientation (``m = min``, ``n = max`` of
    the two), takes ``celo2.NS_STEPS`` steps, each forming ``A = X X^T`` (2 m^2 n), ``A^2`` (2 m^3)
    and ``(b A + c A^2) X`` (2 m^2 n)."""
    from evolopt.architectures.celo2 import NS_STEPS

    m, n = sorted(shape[-2:])
    return math.prod(shape[:-2]) * NS_STEPS * (4 * m * m * n + 2 * m**3)


def param_shapes(task: str) -> list[tuple[int, ...]]:
    """The shapes of the parameter tensors of one model of ``task`` (its family's defaults)."""
    import jax

    import evolopt.task_families  # noqa: F401
    from evolopt.registry import TASK_FAMILIES

    family = TASK_FAMILIES.build(task)
    key = jax.random.key(0)
    return [x.shape for x in jax.tree.leaves(family.init_params(key, family.sample_task(key)))]


def bare_ns(task: str, batch: int, repeats: int) -> tuple[float, int]:
    """``(ms, FLOPs)`` of one inner step's Newton-Schulz alone: ``celo2.newton_schulz`` on each matrix
    of ``task``'s model, batched over ``batch`` members x tasks as the generation step vmaps it (best of
    ``repeats`` calls, compiled as meta-training's)."""
    import jax
    from rule_costs import best_ms  # benchmarks/ is on the path when this file runs as a script

    from evolopt import xla_cpu
    from evolopt.architectures.celo2 import newton_schulz

    shapes = [shape for shape in param_shapes(task) if len(shape) >= 2]
    key = jax.random.key(0)
    xs = [jax.random.normal(jax.random.fold_in(key, i), (batch, *shape)) for i, shape in enumerate(shapes)]
    orthogonalise = xla_cpu.jit(lambda xs: [newton_schulz(x) for x in xs])
    ms = best_ms(orthogonalise, xs, repeats=repeats)
    return ms, batch * sum(ns_flops(shape) for shape in shapes)


def mlp_tensors(arch: str, task: str) -> tuple[list[tuple[int, ...]], int, bool]:
    """``(shapes, macs, wide)``: the shapes of ``task``'s parameter tensors that ``arch``'s per-element MLP
    updates (celo2: the matrices; its vectors get Adam), the multiply-adds per element its MLP must do
    (``rule_costs.mlp_macs``), and whether its layers are wide (run as matmuls, ``fused.WIDE``)."""
    import jax
    from member_steps import build_lopt
    from rule_costs import mlp_macs  # benchmarks/ is on the path when this file runs as a script

    lopt = build_lopt(arch)
    macs, wide = mlp_macs(arch, lopt.init_theta(jax.random.key(0)), lopt.hparams)
    return [s for s in param_shapes(task) if len(s) >= 2 or arch != "celo2"], macs, wide


def mlp_floor(arch: str, task: str, batch: int, repeats: int) -> tuple[float, float]:
    """``(FLOPs, ms)`` of one inner step's per-element MLP alone at its floor: ``mlp_tensors``' multiply-adds
    over its tensors, batched over ``batch`` members x tasks as the generation step vmaps them, at the rate
    this machine does them on those same batched tensors: the elementwise probe
    (``rule_costs.elementwise_rate``: a narrow MLP's hidden units), or for a wide MLP a batched
    ``[n, 32] @ [32, 32]`` matmul per member; compiled as meta-training's."""
    import jax
    import jax.numpy as jnp
    from member_steps import meta_training_vector_width
    from rule_costs import best_ms, elementwise_rate

    from evolopt import xla_cpu

    shapes, macs, wide = mlp_tensors(arch, task)
    flops = 2 * macs * batch * sum(math.prod(s) for s in shapes)
    compile_ = lambda fn: xla_cpu.jit(fn, True, meta_training_vector_width())  # noqa: E731
    key = jax.random.key(0)
    if not wide:
        xs = [jax.random.normal(jax.random.fold_in(key, i), (batch, *s)) for i, s in enumerate(shapes)]
        return flops, flops / elementwise_rate(xs, compile_, repeats)
    hs = [jax.random.normal(jax.random.fold_in(key, i), (batch, math.prod(s), 32)) for i, s in enumerate(shapes)]
    w = jax.random.normal(key, (batch, 32, 32))
    ms = best_ms(compile_(lambda hs: [jnp.einsum("bnk,bkh->bnh", h, w) for h in hs]), hs, repeats=repeats)
    return flops, ms * flops / (2 * 32 * 32 * sum(h.size // 32 for h in hs))

"""Per-tensor accumulators and input features shared by the MLP learned optimizers.

The learned_optimization lineage (AdafacMLP -> VeLO -> Celo -> Celo2) feeds a
per-element MLP with gradient statistics. All accumulators are exponential moving
averages WITHOUT bias correction:

    m_k   <- b_k m_k + (1 - b_k) g                       (momentum, one per decay)
    v     <- b_v v   + (1 - b_v) g^2                     (second moment)
    r_k   <- b_k r_k + (1 - b_k) mean_{d0}(g^2 + 1e-30)  (Adafactor row, tensors with ndim >= 2)
    c_k   <- b_k c_k + (1 - b_k) mean_{d1}(g^2 + 1e-30)  (Adafactor column)

where d0 is the largest and d1 the second-largest axis (ties broken by argsort).
Tensors with ndim < 2 keep a full second moment ``vd_k`` per decay instead.
Decays are arrays so that architectures may learn them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def factored_dims(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(d1, d0)``: the second-largest and largest axes, or None below 2 dims."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape)
    return int(order[-2]), int(order[-1])


def nan_to_num(g: jax.Array) -> jax.Array:
    """``jnp.nan_to_num(g)`` (NaN -> 0, +-inf -> the largest finite float of that sign), written as one
    select and a clip: the same bits, except that a subnormal comes out as zero where the hardware
    reads subnormal inputs as zero (XLA CPU does, so every arithmetic reader of it saw a zero anyway).

    Why not ``jnp.nan_to_num``: it ends in a select, and XLA CPU stored such a sanitised copy of every
    gradient for its five readers (one more write and read of the grads per update, ~5% of
    small_fc_lopt's update in a training loop); ending in a clip, it is fused into each reader.
    """
    big = jnp.finfo(g.dtype).max
    return jnp.clip(jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), -big, big)


def safe_rsqrt(x: jax.Array) -> jax.Array:
    return jax.lax.rsqrt(jnp.maximum(x, 1e-9))


def init_accumulators(p: jax.Array, num_momentum: int = 3, num_factored: int = 3) -> dict:
    """Zero accumulators for one parameter tensor ``p``."""
    dims = factored_dims(p.shape)
    acc = {
        "m": jnp.zeros((num_momentum,) + p.shape, p.dtype),
        "v": jnp.zeros(p.shape, p.dtype),
    }
    if dims is None:
        acc["vd"] = jnp.zeros((num_factored,) + p.shape, p.dtype)
    else:
        d1, d0 = dims
        acc["row"] = jnp.zeros((num_factored,) + tuple(np.delete(p.shape, d0)), p.dtype)
        acc["col"] = jnp.zeros((num_factored,) + tuple(np.delete(p.shape, d1)), p.dtype)
    return acc


def _ema(old: jax.Array, new: jax.Array, decay: jax.Array) -> jax.Array:
    decay = jnp.reshape(decay, decay.shape + (1,) * (old.ndim - decay.ndim))
    return decay * old + (1.0 - decay) * new


def update_accumulators(
    acc: dict,
    g: jax.Array,
    momentum_decays: jax.Array,
    rms_decay: jax.Array,
    factored_decays: jax.Array,
) -> dict:
    """One EMA step of every accumulator with gradient ``g``."""
    dims = factored_dims(g.shape)
    g2 = jnp.square(g)
    out = {
        "m": _ema(acc["m"], g[None], momentum_decays),
        "v": _ema(acc["v"], g2, rms_decay),
    }
    if dims is None:
        out["vd"] = _ema(acc["vd"], (g2 + 1e-30)[None], factored_decays)
    else:
        d1, d0 = dims
        out["row"] = _ema(acc["row"], jnp.mean(g2 + 1e-30, axis=d0)[None], factored_decays)
        out["col"] = _ema(acc["col"], jnp.mean(g2 + 1e-30, axis=d1)[None], factored_decays)
    return out


def factored_terms(acc: dict, g: jax.Array) -> dict:
    """Adafactor quantities for one tensor, each with a leading decay axis.

    For factored tensors: ``row_factor = rsqrt(r / (mean_{d1} r + 1e-9))`` and
    ``col_factor = rsqrt(c)`` broadcast to ``g``'s shape, ``fac_g = g * row_factor *
    col_factor``, and ``row``/``col`` (the raw moments) broadcast to ``g``'s shape.
    For the others: ``fac_g = g * rsqrt(vd + 1e-9)``.
    """
    dims = factored_dims(g.shape)
    if dims is None:
        vd = acc["vd"]
        return {"fac_g": g[None] * safe_rsqrt(vd + 1e-9), "vd": vd}
    d1, d0 = dims
    row, col = acc["row"], acc["col"]
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_mean = jnp.mean(row, axis=1 + reduced_d1, keepdims=True)
    row_factor = jnp.expand_dims(safe_rsqrt(row / (row_mean + 1e-9)), 1 + d0)
    col_factor = jnp.expand_dims(safe_rsqrt(col), 1 + d1)
    shape = (row.shape[0],) + g.shape
    return {
        "fac_g": g[None] * row_factor * col_factor,
        "factor": row_factor * col_factor,
        "row": jnp.broadcast_to(jnp.expand_dims(row, 1 + d0), shape),
        "col": jnp.broadcast_to(jnp.expand_dims(col, 1 + d1), shape),
    }


def factor_parts(acc: dict, dims: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(row_f, col_f, row, col)``: the Adafactor factors and the row/column moments, each
    ``[decays, *shape]`` with a size-1 axis where they broadcast (unbroadcast)."""
    d1, d0 = dims
    row, col = acc["row"], acc["col"]
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_factor = safe_rsqrt(row / (jnp.mean(row, axis=1 + reduced_d1, keepdims=True) + 1e-9))
    row_factor, row = jnp.expand_dims(row_factor, 1 + d0), jnp.expand_dims(row, 1 + d0)
    col_factor, col = jnp.expand_dims(safe_rsqrt(col), 1 + d1), jnp.expand_dims(col, 1 + d1)
    return row_factor, col_factor, row, col


def factor_vectors(acc: dict, dims: tuple[int, int]) -> tuple[list, jax.Array, jax.Array]:
    """Rank-1 Adafactor factor ``row_f col_f`` per decay, and the row/column moments
    with a size-1 axis where they broadcast (as ``factored_terms``, unbroadcast)."""
    row_factor, col_factor, row, col = factor_parts(acc, dims)
    return [row_factor[k] * col_factor[k] for k in range(row.shape[0])], row, col


def channels_last(x: jax.Array) -> jax.Array:
    """[k, *shape] -> [*shape, k]."""
    return jnp.moveaxis(x, 0, -1)


def rms_normalize(x: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """``x * rsqrt(eps + mean(x^2 over axes))``."""
    return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def init_mlp(key: jax.Array, sizes: list[int]) -> dict:
    """Dense layers with truncated-normal weights (std 1/sqrt(fan_in)) and zero biases."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        params[f"w{i}"] = (
            jax.random.truncated_normal(k, -2.0, 2.0, (fan_in, fan_out)) / np.sqrt(fan_in) / 0.87962566
        )  # std of a unit normal truncated at +-2
        params[f"b{i}"] = jnp.zeros((fan_out,))
    return params


def apply_mlp(params: dict, x: jax.Array) -> jax.Array:
    """ReLU MLP over the last axis of ``x``."""
    n = len([k for k in params if k.startswith("w")])
    for i in range(n):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x

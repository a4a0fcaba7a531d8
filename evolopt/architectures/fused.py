"""A per-element MLP over normalised feature channels, without a ``[*shape, C]`` feature tensor.

Every MLP rule here (small_fc_lopt, mulo, celo, celo2) computes, per parameter tensor,

    x_c  = feature channel c (an array of the tensor's shape, or a broadcastable one)
    x̂_c  = x_c rsqrt(eps + mean(x_c^2 over axes))         (per-channel, per-slice scale)
    h    = relu(b0 + sum_c x̂_c w0[c])                      (first layer, H units)
    o    = MLP(h)                                           (ReLU hidden layers, linear head)

Materialising ``x̂`` as ``[*shape, C]`` and multiplying by ``w0`` moves ``C`` floats per
parameter through memory twice. Instead, since the first layer is linear:

  * the per-channel scales ``s_c`` are per-slice scalars, computed for all full-size
    channels in ONE variadic reduction (one pass over memory, not C), from a second copy of
    the channels so that XLA recomputes each channel there and in the first layer instead
    of writing all C channels to memory (``stats_xs``);
  * ``s_c`` is folded into the weight row, ``(s_c w0[c]) x_c``, and the sum over channels
    is one elementwise loop that XLA fuses with the channels' own arithmetic;
  * channels that are constant along an axis (Adafactor row/column moments) are mixed on
    their small vectors and broadcast once, as part of the bias;
  * narrow layers (H < 16) keep one array per unit, computed in one multi-output loop
    (each channel's arithmetic done once per element, not once per unit); wide layers
    (μLO's 32) go channels-last ``[*shape, H]`` so the hidden layers are matmuls.

Optimisation barriers stop XLA from fusing a layer into the next one, which would recompute
every hidden unit once per unit of the next layer (fusion duplicates producers).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def mean_squares(xs: Sequence[jax.Array], axes: tuple[int, ...]) -> list[jax.Array]:
    """``mean(x^2 over axes)`` (kept dims) of every same-shaped x in one variadic reduce.

    The innermost axis is reduced for all channels at once (one pass over memory instead
    of ``len(xs)``); the remaining ``axes`` are then reduced on the small partial sums.
    """
    last = xs[0].ndim - 1
    sq = tuple(jnp.square(x) for x in xs)
    zero = tuple(jnp.zeros((), x.dtype) for x in xs)
    sums = jax.lax.reduce(sq, zero, lambda u, v: tuple(a + b for a, b in zip(u, v)), (last,))
    out = []
    for s in sums:
        s = jnp.expand_dims(s, last) / xs[0].shape[last]
        out.append(jnp.mean(s, axis=axes, keepdims=True) if len(axes) > 1 else s)
    return out


def rms_scale(x: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """``rsqrt(eps + mean(x^2 over axes))`` with kept dims."""
    return jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axes, keepdims=True))


def first_layer(
    rows: Sequence[jax.Array],
    xs: Sequence[jax.Array],
    b0: jax.Array,
    axes: tuple[int, ...],
    eps: float,
    small_rows: Sequence[jax.Array] = (),
    small: Sequence[jax.Array] = (),
    stats_xs: Sequence[jax.Array] | None = None,
) -> list[jax.Array]:
    """Pre-activations ``[b0[k] + sum_c rows[c][k] x̂_c for k in range(H)]`` over normalised channels.

    Args:
      rows: the first-layer weight row ``[H]`` of each full-size channel in ``xs``.
      xs: full-size channels, all of the tensor's shape.
      b0: ``[H]`` bias (plus anything constant per tensor, e.g. time features).
      axes: the axes each channel is normalised over.
      eps: ``x̂ = x rsqrt(eps + mean x^2)``.
      small_rows, small: channels that broadcast to the tensor's shape (size 1 along
        an axis) and their rows; mixed at their own size, then broadcast.

      stats_xs: the same channels as ``xs``, computed a second time from inputs passed
        through ``optimization_barrier`` (so XLA cannot merge the two): the scales are then
        reduced from them, and XLA recomputes each channel inside the reduction and inside
        the layer instead of writing every channel to memory and reading it back twice.

    Returns:
      H arrays of the tensor's shape.
    """
    scales = [jax.lax.rsqrt(eps + s) for s in mean_squares(xs if stats_xs is None else stats_xs, axes)]
    if b0.shape[0] >= WIDE:  # channels-last [*shape, H], for the matmuls that follow
        bias = b0 + sum((rms_scale(x, axes, eps) * x)[..., None] * w for w, x in zip(small_rows, small))
        return bias + sum((s * x)[..., None] * w for w, s, x in zip(rows, scales, xs))
    units = range(b0.shape[0])
    # Scale folded into the weight: (w_ck s_c) x_c, with s_c a per-slice scalar.
    bias = [b0[k] + sum((w[k] * rms_scale(x, axes, eps)) * x for w, x in zip(small_rows, small)) for k in units]
    return [bias[k] + sum((w[k] * s) * x for w, s, x in zip(rows, scales, xs)) for k in units]


WIDE = 16  # layers at least this wide run channels-last as matmuls


def _dense(w: jax.Array, b: jax.Array, h: Sequence[jax.Array], units: Sequence[int] | None = None) -> list[jax.Array]:
    """Units ``[b[k] + sum_j w[j, k] h[j] for k in units]`` (default: all) as one multi-output
    elementwise loop (each input unit is read once per element)."""
    units = range(w.shape[1]) if units is None else units
    return [b[k] + sum(w[j, k] * h[j] for j in range(w.shape[0])) for k in units]


def mlp_heads(mlp: dict, h: Sequence[jax.Array], heads: Sequence[int]) -> list[jax.Array]:
    """Output channels ``heads`` of ``w_L(relu(... relu(w_1 relu(h) + b_1) ...)) + b_L``.

    ``h`` is the first layer's pre-activation, one array per unit; ``mlp`` holds
    ``w1..wL`` and ``b1..bL`` (``w_i`` of shape [fan_in, fan_out]). Returns one array of
    the tensor's shape per requested head.
    """
    depth = 1 + max(int(k[1:]) for k in mlp if k[0] == "w" and k[1:].isdigit())
    if not isinstance(h, (list, tuple)):  # wide: channels-last [*shape, H], matmuls
        for i in range(1, depth):
            h = jax.nn.relu(h) @ mlp[f"w{i}"] + mlp[f"b{i}"]
        return [h[..., k] for k in heads]
    h = jax.lax.optimization_barrier([jax.nn.relu(x) for x in h])
    for i in range(1, depth - 1):
        h = [jax.nn.relu(x) for x in _dense(mlp[f"w{i}"], mlp[f"b{i}"], h)]
        if i < depth - 2 or len(heads) > 1:  # a last hidden layer fuses into one head
            h = jax.lax.optimization_barrier(h)
    w, b = mlp[f"w{depth - 1}"], mlp[f"b{depth - 1}"]
    return _dense(w, b, h, heads)

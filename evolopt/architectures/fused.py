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
    (μLO's 32) run as matmuls: ``first_layer`` + ``mlp_heads`` channels-last on
    ``[*shape, H]`` (celo, celo2), or ``wide_heads`` (small_fc_lopt, mulo), which runs the
    whole MLP block by block (``map_blocks``) so that each block's ``[H, BLOCK]``
    activations stay in cache. On the whole tensor, the first layer, every ReLU and every
    matmul write and re-read ``[N, H]`` (~2 GB per μLO update of 2.1M params), which made
    the update memory-bound at 3x its FLOP floor; blocked, it is >2x faster on CPU.

Optimisation barriers between layers were added to stop XLA from fusing a layer into the next
one, duplicating producers. XLA CPU in jax 0.10 drops them before fusion (measured in session 15:
none is left in the compiled update); the channels, the whole MLP and the update then fuse into
one loop per tensor, in which each hidden unit is emitted once per element, so the fused form
recomputes nothing either way. Except where an MLP's output has two elementwise readers (a norm's
reduction and the multiply by it) and theta is traced: XLA CPU then fuses the whole MLP into each,
so such an output goes through ``stored`` (``recomputes_mlp`` says where).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.architectures.base import SHORT_ROW


def mean_squares(xs: Sequence[jax.Array], axes: tuple[int, ...]) -> list[jax.Array]:
    """``mean(x^2 over axes)`` (kept dims) of every same-shaped x in one variadic reduce.

    The innermost axis is reduced for all channels at once (one pass over memory instead
    of ``len(xs)``); the remaining ``axes`` are then reduced on the small partial sums.
    Rows shorter than ``SHORT_ROW`` (16) floats (a ``[32, 10]`` classifier head) are first merged with the
    axis before them when both are reduced (a free reshape): XLA CPU runs a 10-long inner
    loop unvectorised, and that head's reduction took as long as the 6.4x larger ``[64, 32]``
    matrix's in a meta-training generation.
    """
    last = xs[0].ndim - 1
    shape = xs[0].shape
    if last >= 1 and shape[-1] < SHORT_ROW and {last - 1, last} <= set(axes):
        rest = tuple(a for a in axes if a != last)
        merged = mean_squares([x.reshape(shape[:-2] + (shape[-2] * shape[-1],)) for x in xs], rest)
        return [m.reshape(m.shape + (1,)) for m in merged]
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


def recomputes_mlp(theta: Any) -> bool:
    """Whether XLA would compute a rule's MLP output once per elementwise consumer: on CPU, with
    ``theta`` traced (meta-training, or evaluation jitted over theta). With theta a constant (a user's
    optimizer) XLA CPU stores the output once; traced, it fuses the whole MLP into every consumer (a
    norm's reduction and the multiply by it: celo2_base's MLP ran twice per tensor, ~22% of its
    generation). Use ``stored`` where this holds."""
    return jax.default_backend() == "cpu" and any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(theta))


@jax.custom_jvp
def stored(x: jax.Array) -> jax.Array:
    """``x``, computed once and stored, for consumers that would each recompute it (``recomputes_mlp``).

    XLA CPU drops ``optimization_barrier`` before fusion, but never fuses a while loop's operand
    into anything: ``x`` enters a loop that runs once, returns it in place of a zero-filled carry,
    and whose predicate is a carried flag XLA does not prove false after one step (so the loop stays;
    ``test_celo2_base_mlp_computed_once_with_theta_traced`` checks the compiled step). Costs the
    loop's start and writing the zeros. Differentiable as the identity (a custom JVP: reverse mode
    cannot pass through a while loop; ``evolopt.diagnose`` takes ``jax.grad`` through unrolls).
    """
    once = jax.lax.while_loop(lambda c: ~c[0], lambda c: (jnp.bool_(True), x), (jnp.bool_(False), jnp.zeros_like(x)))
    return once[1]


@stored.defjvp
def _stored_jvp(primals: tuple, tangents: tuple) -> tuple:
    return stored(primals[0]), tangents[0]


def _dense(w: jax.Array, b: jax.Array, h: Sequence[jax.Array], units: Sequence[int] | None = None) -> list[jax.Array]:
    """Units ``[b[k] + sum_j w[j, k] h[j] for k in units]`` (default: all) as one multi-output
    elementwise loop (each input unit is read once per element)."""
    units = range(w.shape[1]) if units is None else units
    return [b[k] + sum(w[j, k] * h[j] for j in range(w.shape[0])) for k in units]


def mlp_depth(mlp: dict) -> int:
    """Number of layers of an MLP stored as ``w0..wL`` / ``b0..bL``: ``L + 1``."""
    return 1 + max(int(k[1:]) for k in mlp if k[0] == "w" and k[1:].isdigit())


def mlp_heads(mlp: dict, h: Sequence[jax.Array], heads: Sequence[int]) -> list[jax.Array]:
    """Output channels ``heads`` of ``w_L(relu(... relu(w_1 relu(h) + b_1) ...)) + b_L``.

    ``h`` is the first layer's pre-activation, one array per unit; ``mlp`` holds
    ``w1..wL`` and ``b1..bL`` (``w_i`` of shape [fan_in, fan_out]). Returns one array of
    the tensor's shape per requested head.
    """
    depth = mlp_depth(mlp)
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


BLOCK = 8192  # CPU: elements per block of ``wide_heads``; [32, BLOCK] float32 activations are 1 MiB
ACCELERATOR_BLOCK = 1 << 20  # elsewhere: [32, 2^20] float32 activations are 128 MiB


def block_size() -> int:
    """Elements per block of ``wide_heads`` on the backend jax computes on by default.

    On CPU, ``BLOCK``: a block's activations must stay in cache (measured: >2x faster than
    whole tensors on 2.1M params; of 8192..65536, 8192 was the fastest one update per call and
    within 11% of the fastest in a training loop). On an accelerator every block is a sequential
    step of the loop, each a few kernel launches, so 8192-element blocks would take ~2,400 steps
    per update of a 20M-param model; ``ACCELERATOR_BLOCK`` keeps that to ~20 while bounding each
    layer's activations (a whole 1B-param tensor's would not fit). Not yet timed on a GPU:
    ``benchmarks/device_figures.sh`` times μLO's MLP in blocks of 8192, 65536 and 2^20 there.
    """
    return BLOCK if jax.default_backend() == "cpu" else ACCELERATOR_BLOCK


def block_plan(shape: tuple[int, ...], size: int) -> tuple[int, int] | None:
    """``(a, b)``: blocks of ``shape`` are ``[1, ..., 1, b, *shape[a+1:]]`` (at most ``size``
    elements unless ``shape[a+1:]`` alone is larger), contiguous in row-major order; None
    when the whole tensor fits in one block."""
    inner = 1
    for a in range(len(shape) - 1, -1, -1):
        if inner * shape[a] > size:
            return a, max(1, size // inner)
        inner *= shape[a]
    return None


def map_blocks(
    fn: Callable[[Any], Sequence[jax.Array]], shape: tuple[int, ...], args: Any, size: int | None = None
) -> list[jax.Array]:
    """``fn(args)`` computed block by block over a tensor of ``shape`` (see ``block_plan``).

    Every leaf of ``args`` ends in the tensor's axes, each of its size or 1 (numpy
    broadcasting); leading axes are passed whole. ``fn`` maps the leaves' slices for one
    block to a list of arrays of the block's shape; each output element must depend only on
    its own position (a per-element rule), so blocks are independent. Along the blocked axis
    the last block is shifted back to end at the tensor's edge, recomputing a few elements
    rather than padding. Returns the outputs at the tensor's shape.
    ``size`` (default ``block_size()``): elements per block; a tensor that fits is one call of ``fn``.
    """
    plan = block_plan(shape, block_size() if size is None else size)
    if plan is None:
        return list(fn(args))
    a, b = plan
    n_j = -(-shape[a] // b)  # blocks along axis a, per index of the outer axes
    n_blocks = n_j * int(np.prod(shape[:a], dtype=np.int64))
    block_shape = (1,) * a + (b,) + tuple(shape[a + 1 :])

    def starts(i):
        j, o = i % n_j, i // n_j
        outer = []
        for s in reversed(shape[:a]):
            outer.append(o % s)
            o = o // s
        return outer[::-1] + [jnp.minimum(j * b, shape[a] - b)] + [0] * (len(shape) - a - 1)

    def take(x, start):
        lead = x.ndim - len(shape)
        t = x.shape[lead:]
        begin = [0] * lead + [s if n > 1 else 0 for s, n in zip(start, t)]
        sizes = list(x.shape[:lead]) + [min(n, m) for n, m in zip(t, block_shape)]
        return jax.lax.dynamic_slice(x, begin, sizes)

    # A leaf whose slice is the same for every block (size 1 up to the blocked axis) but
    # broadcasts along a block axis before its last full one (e.g. an Adafactor column
    # vector [1, C] over a block's rows) is broadcast to the block once, here: XLA CPU
    # writes such broadcasts slowly, and would otherwise do it in every block.
    leaves, treedef = jax.tree.flatten(args)
    fixed = []
    for x in leaves:
        t = x.shape[x.ndim - len(shape) :]
        last = max((k for k, n in enumerate(t) if n > 1), default=-1)
        fixed.append(all(n == 1 for n in t[: a + 1]) and any(n == 1 < m for n, m in zip(t[:last], block_shape[:last])))
    leaves = [
        jax.lax.optimization_barrier(jnp.broadcast_to(x, x.shape[: x.ndim - len(shape)] + block_shape)) if f else x
        for f, x in zip(fixed, leaves)
    ]

    def blocks(i):
        start = starts(i)
        out = fn(treedef.unflatten([x if f else take(x, start) for f, x in zip(fixed, leaves)]))
        return start, [jnp.broadcast_to(y, block_shape) for y in out]

    avals = jax.eval_shape(lambda: blocks(jnp.int32(0))[1])
    init = [jnp.zeros(shape, y.dtype) for y in avals]

    def body(i, outs):
        start, ys = blocks(i)
        return [jax.lax.dynamic_update_slice(o, y, start) for o, y in zip(outs, ys)]

    return jax.lax.fori_loop(0, n_blocks, body, init)


def wide_heads(
    mlp: dict,
    heads: Sequence[int],
    shape: tuple[int, ...],
    channels: Callable[..., list[jax.Array]],
    prims: tuple,
    rows: Sequence[jax.Array],
    b0: jax.Array,
    axes: tuple[int, ...],
    eps: float,
    small_rows: Sequence[jax.Array] = (),
    small: Sequence[jax.Array] = (),
    size: int | None = None,
) -> list[jax.Array]:
    """``mlp_heads(mlp, first_layer(rows, channels(*prims), b0, axes, eps, small_rows, small), heads)``
    for a wide MLP (H >= WIDE), block by block (``map_blocks``), so that no ``[N, H]`` array
    goes through memory: each block's activations stay in cache.

    ``prims``: a tuple of pytrees whose leaves end in the axes of the tensor (of ``shape``),
    each of its size or 1 (broadcast factors); ``channels(*prims)`` are the full-size
    channels, computed elementwise from them, so inside each block from its slices. The
    scales are reduced first, from a second, barrier'd evaluation of ``channels`` (see
    ``first_layer``); the small channels are mixed on their vectors into one bias term per
    broadcast shape. Inside a block the layers run channels-first: ``[H, fan_in] @ [fan_in, B]``.
    """
    stats = channels(*jax.lax.optimization_barrier(prims))
    scales = [jax.lax.rsqrt(eps + s) for s in mean_squares(stats, axes)]
    parts: dict[tuple[int, ...], jax.Array] = {}
    for w, x in zip(small_rows, small):
        t = (rms_scale(x, axes, eps) * x)[..., None] * w
        parts[x.shape] = parts[x.shape] + t if x.shape in parts else t
    bias = [jnp.moveaxis(t, -1, 0) for t in parts.values()]  # [H, *shape']: the tensor's axes last
    depth = mlp_depth(mlp)

    def block(args):
        prims, scales, bias = args
        xs = [s * x for s, x in zip(scales, channels(*prims))]
        block_shape = jnp.broadcast_shapes(*(x.shape for x in xs))
        # [C, B]; the barrier keeps XLA from fusing the channels into the matmul's operand
        # (which it then runs as a slow naive loop).
        x = jax.lax.optimization_barrier(jnp.stack([jnp.broadcast_to(x, block_shape).reshape(-1) for x in xs]))
        h = b0[:, None] + sum(jnp.broadcast_to(t, t.shape[:1] + block_shape).reshape(len(t), -1) for t in bias)
        h = h + jnp.stack(rows, 1) @ x
        for i in range(1, depth):
            h = mlp[f"w{i}"].T @ jax.nn.relu(h) + mlp[f"b{i}"][:, None]
        return [h[k].reshape(block_shape) for k in heads]

    return map_blocks(block, tuple(shape), (prims, scales, bias), size)

"""Celo2: a per-element MLP learned optimizer with Newton-Schulz orthogonalised steps.

Moudgil, Knyazev, Belilovsky, "Celo2: Towards Learned Optimization Free Lunch"
(arXiv 2602.19142). The facts we match are in ``shared/specs/celo2.md``.

Per parameter tensor ``p`` with gradient ``g`` (first clipped to [-1000, 1000]):

  * EMAs without bias correction: ``m_k`` (decays .9, .99, .999), ``v`` (.95) and
    Adafactor moments ``row_k``/``col_k`` on ``g^2 + 1e-30`` (``vd_k`` for ndim < 2);
  * ``rf_k = safe_rsqrt(row_k / (mean row_k + 1e-9))``, ``cf_k = safe_rsqrt(col_k)``;
  * 14 feature blocks ``x_i`` (30 channels; blocks 0..8 = 15 channels for ndim < 2):
    g, clip(g, .1), p, m, v, m rsqrt(v+1e-8), rsqrt(v+1e-8), g rf cf, g rsqrt(v+1e-8),
    row, col, rsqrt(row+1e-8), rsqrt(col+1e-8), m rf cf;
  * each channel normalised over the last two axes: ``x rsqrt(1e-9 + mean x^2)``;
  * ``o = MLP(x)`` with first layer ``sum_i x_i @ w0__i + b0``, ReLU, width 8, 3 outputs;
  * ``d = o_0 exp(exp_mult o_1)``; for ndim >= 2, ``d <- NS5(d)`` on the last two axes;
  * ``step = d rsqrt(1e-9 + mean d^2)`` over the last two axes (unit RMS).

``scale_by_celo2`` emits ``+step``, the quantity the authors SUBTRACT from ``p``.
``celo2`` is the full optimizer: ``p <- p - lr (step + wd p)`` for matrices and
``p <- p - 20 lr (adam + wd p)`` for biases/embeddings/1-D leaves (``celo2_adam``).

Choices where the authors' code and the spec leave room: the Adam group's gradients
are clipped too (spec; the authors clip only the learned group's); leaves with
ndim < 2 go to Adam by default even if the regex misses them (``route_1d_to_adam``);
``row_factor`` uses ``mean + 1e-9`` as the authors' code; Newton-Schulz runs at the
default matmul precision, as the authors'.

Speed (``fused.py``): the first layer is linear, so each channel's normalisation is folded
into its weight row (a per-tensor scalar); the channel scales come from one variadic reduce
over channels XLA recomputes rather than stores; the 12 row/column channels, constant along
one axis, are mixed on their small vectors and broadcast. No ``[*shape, 30]`` feature tensor
is materialised. Newton-Schulz reads the MLP's output through matmuls only, so XLA stores it once
(``newton_schulz``); a direction that is only RMS-normalised (celo2_base, celo2_ns_input) is stored
through ``fused.stored`` where XLA would compute it in each reader (CPU, theta traced). On CPU a
tall tensor with short rows has its direction computed transposed (``computed_wide``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from evolopt.architectures import features as F
from evolopt.architectures import fused
from evolopt.architectures.base import LearnedOptimizer, short_rows
from evolopt.architectures.celo2_adam import adam_labels as adam_labels  # re-exported: celo2.adam_labels
from evolopt.architectures.celo2_adam import scale_by_celo2_adam
from evolopt.architectures.celo2_checkpoint import BLOCK_SIZES
from evolopt.architectures.celo2_checkpoint import load_theta as load_theta  # re-exported: celo2.load_theta
from evolopt.architectures.celo2_checkpoint import save_theta as save_theta
from evolopt.architectures.celo2_checkpoint import validate_theta as validate_theta
from evolopt.registry import register_arch

MOMENTUM_DECAYS = (0.9, 0.99, 0.999)
RMS_DECAY = 0.95
FACTORED_DECAYS = (0.9, 0.99, 0.999)
NUM_INPUTS = sum(BLOCK_SIZES)  # 30
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
DEFAULT_PARAM_REGEX = r".*bias.*|.*embed.*"


def init_theta(
    key: jax.Array, hidden_size: int = 8, hidden_layers: int = 2, block_sizes: tuple[int, ...] = BLOCK_SIZES
) -> dict:
    """Initial meta-parameters, in the published checkpoint's structure.

    Weights are truncated normal (+-2 std) with std ``1/sqrt(fan_in)``, the first
    layer's fan-in being all input channels (30 for Celo2); biases are zero.
    """
    mlp = F.init_mlp(key, [sum(block_sizes)] + [hidden_size] * hidden_layers + [3])
    bounds = np.cumsum((0,) + tuple(block_sizes))
    leaf = {f"w0__{i}": mlp["w0"][bounds[i] : bounds[i + 1]] for i in range(len(block_sizes))}
    leaf.update({k: v for k, v in mlp.items() if k != "w0"})
    return {"ff_mod_stack": {"~": leaf}}


def momentum_theta(
    key: jax.Array | None = None,
    hidden_size: int = 8,
    hidden_layers: int = 2,
    block_sizes: tuple[int, ...] = BLOCK_SIZES,
    source_block: int = 3,
) -> dict:
    """The theta whose MLP outputs the 0.9-momentum channel unchanged: ``d = m_0``.

    Every hidden layer carries ``relu(x)`` and ``relu(-x)`` in units 0 and 1 (all other
    weights zero), and the head takes their difference, so ``o_0 = m_0`` exactly (the
    channel's per-tensor RMS scale is removed again by the final normalisation). Celo2
    with it is Muon without Nesterov: ``step = NS5(m) / rms(NS5(m))``, ``m <- 0.9 m + 0.1 g``;
    Celo2-base is momentum normalised to unit RMS per tensor. A hand-designed starting
    point for meta-training (``theta_init=muon``); ``key`` is unused. ``source_block`` is
    the input block whose first channel is passed through (3: the momentum ``m_0``).
    """
    del key
    if hidden_size < 2 or hidden_layers < 1:
        raise ValueError(
            f"momentum_theta needs hidden_size >= 2 and hidden_layers >= 1, got {hidden_size}, {hidden_layers}"
        )
    shapes = jax.eval_shape(lambda k: init_theta(k, hidden_size, hidden_layers, block_sizes), jax.random.key(0))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    leaf = zeros["ff_mod_stack"]["~"]
    leaf[f"w0__{source_block}"][0, :2] = (1.0, -1.0)  # m_0.9 -> (relu(m), relu(-m))
    for i in range(1, hidden_layers):
        leaf[f"w{i}"][:2, :2] = ((1.0, -1.0), (-1.0, 1.0))
    leaf[f"w{hidden_layers}"][:2, 0] = (1.0, -1.0)  # o_0 = relu(m) - relu(-m) = m
    return jax.tree.map(jnp.asarray, zeros)


# ----------------------------------------------------------------------------- the rule


def newton_schulz(x: jax.Array, steps: int = NS_STEPS) -> jax.Array:
    """Approximate orthogonalisation of the last two axes (Muon's quintic iteration).

    ``X <- X / (||X||_F + 1e-8)``, then ``steps`` times ``X <- a X + (b A + c A^2) X``
    with ``A = X X^T``, on the wide orientation (transposed when rows > columns); ``steps >= 1``.

    The first step is taken on the unscaled input ``Y``: with ``G = Y Y^T``,
    ``||Y||_F^2 = tr G`` and ``s = 1 / (sqrt(tr G) + 1e-8)``, it is
    ``X_1 = s (a I + b s^2 G + c s^4 G^2) Y``, so ``Y`` is read only by two matmuls. Why: a
    norm and a division reading ``Y`` are elementwise consumers XLA CPU fuses ``Y``'s producer
    into, and in meta-training it did, computing a rule's whole MLP twice (README,
    "Newton-Schulz's input read by matmuls only"); a matmul operand is materialised once.
    """
    a, b, c = NS_COEFFS
    wide = x.shape[-2] <= x.shape[-1]
    x = x if wide else jnp.swapaxes(x, -1, -2)

    def gram(x):  # Default matmul precision, as the authors (float32 on CPU; TF32 allowed on GPU).
        return jnp.matmul(x, jnp.swapaxes(x, -1, -2))

    g0 = gram(x)
    scale = 1.0 / (jnp.sqrt(jnp.trace(g0, axis1=-2, axis2=-1))[..., None, None] + 1e-8)
    a0 = jnp.square(scale) * g0
    poly0 = a * jnp.eye(x.shape[-2], dtype=x.dtype) + b * a0 + c * jnp.matmul(a0, a0)
    x = jnp.matmul(scale * poly0, x)

    def step(_, x):
        g = gram(x)
        return a * x + jnp.matmul(b * g + c * jnp.matmul(g, g), x)

    x = jax.lax.fori_loop(0, steps - 1, step, x)
    return x if wide else jnp.swapaxes(x, -1, -2)


def orthogonalize_step(
    d: jax.Array, conv_as_matrix: bool = False, transposed: bool = False
) -> tuple[jax.Array, tuple[int, ...]]:
    """``(NS5(d), axes its RMS is normalised over)`` for a tensor with ndim >= 2.

    Default (the authors' rule): every slice over the last two axes is one matrix, so a
    conv kernel [kh, kw, cin, cout] is kh*kw separate [cin, cout] matrices (per tap).
    ``conv_as_matrix``: a tensor with ndim > 2 is ONE [prod(shape[:-1]), shape[-1]]
    matrix, as Muon implementations treat conv kernels ([kh*kw*cin, cout]), and its
    step has unit RMS over the whole tensor.
    ``transposed``: ``d`` comes with its last two axes swapped (``computed_wide``); the
    result is in the tensor's own orientation.
    """
    if transposed:
        return jnp.swapaxes(newton_schulz(d), -1, -2), step_axes(d.ndim, False)
    if conv_as_matrix and d.ndim > 2:
        return newton_schulz(d.reshape(-1, d.shape[-1])).reshape(d.shape), step_axes(d.ndim, True)
    return newton_schulz(d), step_axes(d.ndim, False)


def computed_wide(shape: tuple[int, ...], conv_as_matrix: bool) -> bool:
    """Whether a tensor's direction is computed transposed, as the wide matrices Newton-Schulz
    iterates on: its slices, orthogonalised one by one, have more rows than columns and rows
    shorter than ``SHORT_ROW``. (A direction that is not orthogonalised is computed transposed only
    where it is ``fused.stored``: read in its own layout, XLA would compute it in that layout.)

    Why: in its own layout XLA CPU runs the per-element MLP over rows that short without
    vectorising it: image_mlp's [32, 10] head's MLP kernel took up to 77 ms per meta-training
    generation against 11-19 computed as [10, 32] (``benchmarks/kernel_profile.py --arch celo2``).
    Longer rows stay as they are: transposed, a [2048, 512] update took 85 ms against 73. Only
    on CPU (jax's default backend), where it was measured: an accelerator's fused loops are not
    vectorised along rows, and a transposed read may cost there (``benchmarks/device_figures.sh``).
    """
    if not short_rows(shape) or (conv_as_matrix and len(shape) > 2) or jax.default_backend() != "cpu":
        return False
    return shape[-2] > shape[-1]


def step_axes(ndim: int, conv_as_matrix: bool) -> tuple[int, ...]:
    """The axes a step's RMS is normalised over: the last two, or with ``conv_as_matrix`` every axis
    of a tensor with ndim > 2 (it was orthogonalised as one matrix)."""
    if conv_as_matrix and ndim > 2:
        return tuple(range(ndim))
    return tuple(range(max(ndim - 2, 0), ndim))


def _channels(p: jax.Array, g: jax.Array, acc: dict, rfcf: list | None) -> list[jax.Array]:
    """Per-element channels in the spec's order (blocks 0..8, then 13 for ndim >= 2)."""
    m, v = acc["m"], acc["v"]
    rs = jax.lax.rsqrt(v + 1e-8)
    if rfcf is None:
        fac = [g * F.safe_rsqrt(acc["vd"][k] + 1e-9) for k in range(3)]
    else:
        fac = [g * rfcf[k] for k in range(3)]
    xs = [g, jnp.clip(g, -0.1, 0.1), p, m[0], m[1], m[2], v]
    xs += [m[k] * rs for k in range(3)] + [rs] + fac + [g * rs]
    return xs if rfcf is None else xs + [m[k] * rfcf[k] for k in range(3)]


def _direction(
    mlp: dict,
    p: jax.Array,
    g: jax.Array,
    acc: dict,
    exp_mult: Any,
    ns_input: jax.Array | None = None,
    transposed: bool = False,
) -> jax.Array:
    """MLP output ``d = o_0 exp(exp_mult o_1)`` for one tensor (ndim >= 1), float32.

    The per-element MLP runs through ``fused``: no [*shape, 30] input; the row/column
    blocks 9..12 (constant along d0 or d1) are mixed on their small vectors.
    ``ns_input``: an extra full-size channel (block 14, ``celo2_ns_input``).
    ``transposed`` (ndim >= 2): return ``d`` with its last two axes swapped (the MLP is per
    element and each channel is normalised over both axes, so only the layout changes).
    """
    axes = tuple(range(max(p.ndim - 2, 0), p.ndim))
    dims = F.factored_dims(p.shape)
    rfcf = None if dims is None else F.factor_vectors(acc, dims)[0]  # rank-1, cheap to broadcast
    xs = _channels(p, g, acc, rfcf)
    again = _channels(*jax.lax.optimization_barrier((p, g, acc, rfcf)))  # see fused.first_layer
    blocks = [0, 1, 2, 3, 4, 5, 6, 7, 8] + ([] if rfcf is None else [13])
    rows = [w for i in blocks for w in mlp[f"w0__{i}"]]  # each [H]
    if ns_input is not None:  # already materialised (a matmul's output): no recompute
        xs, again, rows = xs + [ns_input], again + [ns_input], rows + [mlp["w0__14"][0]]
    small_rows, small = [], []
    if rfcf is not None:
        _, row, col = F.factor_vectors(acc, dims)
        small = [row[k] for k in range(3)] + [col[k] for k in range(3)]
        small += [jax.lax.rsqrt(x + 1e-8) for x in small]
        small_rows = [w for i in (9, 10, 11, 12) for w in mlp[f"w0__{i}"]]
    if transposed:  # not ``again``: the scales, over both axes, read it in its own layout
        xs, small = ([jnp.swapaxes(x, -1, -2) for x in group] for group in (xs, small))
    h = fused.first_layer(rows, xs, mlp["b0"], axes, 1e-9, small_rows, small, stats_xs=again)
    if isinstance(exp_mult, (int, float)) and exp_mult == 0:  # exp(0 o_1) = 1: skip that head
        return fused.mlp_heads(mlp, h, (0,))[0]
    direction, magnitude = fused.mlp_heads(mlp, h, (0, 1))
    return direction * jnp.exp(exp_mult * magnitude)


def scale_by_celo2(
    theta: dict,
    orthogonalize: bool = True,
    exp_mult: float = 0.0,
    conv_as_matrix: bool = False,
    ns_input: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """The bare Celo2 rule: ``updates = +step`` with unit RMS over the last two axes.

    ``conv_as_matrix`` orthogonalises tensors with ndim > 2 as one matrix (see
    ``orthogonalize_step``); the default is the authors' per-slice rule.
    ``ns_input`` (``celo2_ns_input``): Newton-Schulz moves from the MLP's output to its
    input: ``NS5(m_0)`` is a 31st channel (block 14; ``m_0`` itself for ndim < 2) and the
    output ``d`` is only RMS-normalised, so the step is smooth in theta.

    ``step`` is what the authors SUBTRACT (``p <- p - lr step``); optax adds updates,
    so chain with a negative scale (``celo2`` does). Needs ``params``; extra args
    (``loss``, ``num_steps``) are ignored. ``theta`` may be traced.
    """
    mlp = theta["ff_mod_stack"]["~"]
    store = fused.recomputes_mlp(mlp)  # meta-training on CPU: the direction stored, short rows transposed
    decays = (jnp.asarray(MOMENTUM_DECAYS), jnp.asarray(RMS_DECAY), jnp.asarray(FACTORED_DECAYS))

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return {"acc": jax.tree.map(F.init_accumulators, zeros)}

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_celo2 needs params (parameter values are a feature)")
        flat_g, treedef = jax.tree.flatten(updates)
        flat_acc = treedef.flatten_up_to(state["acc"])
        flat_p = treedef.flatten_up_to(params)
        dirs, accs = [], []
        for g, acc, p in zip(flat_g, flat_acc, flat_p):
            g32 = jnp.clip(g.astype(jnp.float32), -1000.0, 1000.0)
            acc = F.update_accumulators(acc, g32, *decays)
            accs.append(acc)
            if p.ndim == 0:  # scalars behave as 1-element vectors
                acc = jax.tree.map(lambda a: a.reshape(a.shape + (1,)), acc)
            p32 = p.astype(jnp.float32).reshape(p.shape or (1,))
            extra = None
            if ns_input:
                extra = orthogonalize_step(acc["m"][0], conv_as_matrix)[0] if p.ndim >= 2 else acc["m"][0]
            orthogonal = orthogonalize and not ns_input and p.ndim >= 2
            wide = (orthogonal or store) and computed_wide(p.shape, conv_as_matrix)
            dirs.append((_direction(mlp, p32, g32.reshape(p32.shape), acc, exp_mult, extra, wide), wide, orthogonal))
        steps = []
        for (d, wide, orthogonal), g in zip(dirs, flat_g):
            # ns_input: the momentum was orthogonalised (as one matrix with conv_as_matrix), not d
            axes = step_axes(d.ndim, ns_input and conv_as_matrix)
            if orthogonal:  # per tensor: XLA CPU runs batched matmuls on one thread
                d, axes = orthogonalize_step(d, conv_as_matrix, wide)
            elif store:  # read by the RMS's reduction and the multiply: computed once, not in each
                d = fused.stored(d)
                d = jnp.swapaxes(d, -1, -2) if wide else d
            steps.append((d * fused.rms_scale(d, axes, 1e-9)).reshape(g.shape).astype(g.dtype))
        return treedef.unflatten(steps), {"acc": treedef.unflatten(accs)}

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def celo2(
    theta: dict,
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    weight_decay: float = 0.0,
    adam_lr_mult: float = 20.0,
    param_regex: str = DEFAULT_PARAM_REGEX,
    orthogonalize: bool = True,
    route_1d_to_adam: bool = True,
    exp_mult: float = 0.0,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_bias_correction: bool = False,
    conv_as_matrix: bool = False,
    ns_input: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Celo2 as a full optax optimizer (updates are added to params).

    Leaves whose ``/``-joined path matches ``param_regex`` (default: biases and
    embeddings, the authors' choice), and with ``route_1d_to_adam`` every leaf with
    ndim < 2 (LayerNorm/BatchNorm scales, scalars), get Adam:
    ``p <- p - adam_lr_mult lr (m / sqrt(v + eps) + wd p)``. All others get the
    learned rule: ``p <- p - lr (step + wd p)``. Gradients are clipped to
    [-1000, 1000] first, for both groups.
    """
    lr_adam: optax.ScalarOrSchedule
    if callable(learning_rate):
        lr_adam = lambda count: adam_lr_mult * learning_rate(count)  # noqa: E731
    else:
        lr_adam = adam_lr_mult * learning_rate
    learned = optax.chain(
        scale_by_celo2(theta, orthogonalize, exp_mult, conv_as_matrix, ns_input),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    adam = optax.chain(
        optax.clip(1000.0),
        scale_by_celo2_adam(adam_b1, adam_b2, adam_eps, adam_bias_correction),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(lr_adam),
    )

    def labels(params: Any) -> Any:
        return adam_labels(params, param_regex, route_1d_to_adam)

    return optax.multi_transform({"celo2": learned, "adam": adam}, labels)


def _factory(name: str, orthogonalize: bool, hparams: dict[str, Any]) -> LearnedOptimizer:
    def make(theta: dict, **kw: Any) -> optax.GradientTransformationExtraArgs:
        return celo2(theta, orthogonalize=orthogonalize, **kw)

    inits = {"muon" if orthogonalize else "momentum": momentum_theta}
    return LearnedOptimizer(name=name, init_theta=init_theta, make=make, hparams=hparams, named_inits=inits)


@register_arch("celo2")
def celo2_arch(
    *,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    adam_lr_mult: float = 20.0,
    param_regex: str = DEFAULT_PARAM_REGEX,
    route_1d_to_adam: bool = True,
    exp_mult: float = 0.0,
    conv_as_matrix: bool = False,
) -> LearnedOptimizer:
    """Celo2 (Moudgil et al. 2026): 30 features -> MLP(8, 8) -> Newton-Schulz; Adam for 1-D.

    ``conv_as_matrix=true`` orthogonalises a conv kernel [kh, kw, cin, cout] as one
    [kh*kw*cin, cout] matrix (as Muon implementations do) instead of per tap.
    """
    return _factory("celo2", True, dict(locals()))


@register_arch("celo2_base")
def celo2_base_arch(
    *,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    adam_lr_mult: float = 20.0,
    param_regex: str = "",
    route_1d_to_adam: bool = False,
    exp_mult: float = 0.0,
) -> LearnedOptimizer:
    """Celo2-base: no orthogonalisation, and (as the authors) the learned rule for every leaf."""
    return _factory("celo2_base", False, dict(locals()))

"""small_fc_lopt: the AdafacMLP learned optimizer.

Metz et al. 2022, "Practical tradeoffs between memory, compute, and performance in
learned optimizers" (arXiv 2203.11860); the rule of learned_optimization's
``AdafacMLPLOpt``, which we follow where the paper is silent.

Per parameter tensor ``p`` with gradient ``g`` (NaNs zeroed) and step ``t``:

  * decays are learned: ``b = clip(1 - (1 - b0) exp(10 theta_b), 0, 1)`` with
    b0 = (0.9, 0.99, 0.999) for momentum and the Adafactor moments, 0.999 for RMS;
  * 28 features (g, p, m[3], v, m rsqrt(v+1e-6)[3], rsqrt(v+1e-6), fac_g[3],
    row[3], col[3], rsqrt(row+1e-8)[3], rsqrt(col+1e-8)[3], m row_f col_f[3];
    for ndim < 2 the last five groups are vd, vd, rsqrt(vd+1e-8) x2,
    m (vd+1e-6)^-1/2), each channel normalised over all elements:
    ``x rsqrt(1e-5 + mean x^2)``;
  * 11 time features ``tanh(t / tau - 1)``, tau in {1, 3, 10, ..., 1e5}, unnormalised;
  * MLP 39 -> 4 -> 4 -> 2 (ReLU) gives (d, m);
  * ``p <- p - lr * d * exp(exp_mult * m)`` with lr = exp_mult = 1e-3 by default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from evolopt.architectures import features as F
from evolopt.architectures import fused
from evolopt.architectures.base import LearnedOptimizer
from evolopt.registry import register_arch

TIME_SCALES = np.array([1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5], np.float32)
MOMENTUM_DECAYS = np.array([0.9, 0.99, 0.999], np.float32)  # numpy: importing must not start a JAX backend
RMS_DECAY = np.array(0.999, np.float32)  # numpy: importing must not start a JAX backend
FACTORED_DECAYS = np.array([0.9, 0.99, 0.999], np.float32)  # numpy: importing must not start a JAX backend
NUM_INPUTS = 28 + len(TIME_SCALES)


def _decay(base: jax.Array, raw: jax.Array) -> jax.Array:
    return 1.0 - (1.0 - base) * jnp.exp(10.0 * raw)


def init_theta(key: jax.Array, hidden_size: int = 4, hidden_layers: int = 2) -> dict:
    return {
        "mlp": F.init_mlp(key, [NUM_INPUTS] + [hidden_size] * hidden_layers + [2]),
        "decays": {"momentum": jnp.zeros(3), "rms": jnp.zeros(()), "factored": jnp.zeros(3)},
    }


def _mlp_output(mlp: dict, p, g, acc, step) -> list[jax.Array]:
    """The MLP's two outputs ``[d, m]`` (each of p's shape), without materialising the
    [*p.shape, 39] input (``_features`` is the reference form; see ``fused.py``).

    The 11 time features are the same for every element and fold into the bias; the 12
    row/column channels of a factored tensor are mixed on their small vectors. A wide MLP
    (μLO's 32 units) on a tensor larger than ``fused.block_size()`` runs block by block
    (``fused.wide_heads``), each block forming its Adafactor factors ``row_f col_f`` from
    the two broadcast vectors; smaller tensors (a meta-training task's, vmapped over a
    population) keep the whole-tensor form below, which is faster there.
    """
    shape = p.shape
    if p.ndim == 0:  # a scalar normalises over its one element, as a 1-element vector
        p, g = p.reshape(1), g.reshape(1)
        acc = jax.tree.map(lambda a: a.reshape(a.shape + (1,)), acc)
    axes = tuple(range(p.ndim))
    time = jnp.tanh(step.astype(jnp.float32) / TIME_SCALES - 1.0)
    w0 = mlp["w0"]
    b0 = mlp["b0"] + time @ w0[28:]
    dims = F.factored_dims(p.shape)
    rows = list(w0[:10])
    if dims is None:
        # vd and rsqrt(vd + 1e-8) each feed two input rows: one channel with the summed row.
        rows += list(w0[10:13]) + list(w0[13:16] + w0[16:19]) + list(w0[19:22] + w0[22:25]) + list(w0[25:28])
        small_rows, small, factors = [], [], ()
    else:
        row_f, col_f, row, col = F.factor_parts(acc, dims)
        rows += list(w0[10:13]) + list(w0[25:28])
        small = [row[k] for k in range(3)] + [col[k] for k in range(3)]
        small += [jax.lax.rsqrt(x + 1e-8) for x in small]
        small_rows, factors = list(w0[13:25]), (row_f, col_f)
    if w0.shape[1] >= fused.WIDE and fused.block_plan(p.shape, fused.block_size()) is not None:
        full = {k: acc[k] for k in ("m", "v", "vd") if k in acc}  # row/col do not end in p's axes
        prims = (p, g, full, *factors)
        out = fused.wide_heads(mlp, (0, 1), p.shape, _channels, prims, rows, b0, axes, 1e-5, small_rows, small)
        return [o.reshape(shape) for o in out]
    prims = (p, g, acc) if dims is None else (p, g, acc, [row_f[k] * col_f[k] for k in range(3)])
    xs = _full_channels(*prims)
    again = _full_channels(*jax.lax.optimization_barrier(prims))  # see fused.first_layer
    out = fused.first_layer(rows, xs, b0, axes, 1e-5, small_rows, small, stats_xs=again)
    return [o.reshape(shape) for o in fused.mlp_heads(mlp, out, (0, 1))]


def _channels(p, g, acc, row_f=None, col_f=None) -> list[jax.Array]:
    """``_full_channels`` with the Adafactor factors given as their row and column vectors."""
    return _full_channels(p, g, acc, None if row_f is None else [row_f[k] * col_f[k] for k in range(3)])


def _full_channels(p, g, acc, factor=None) -> list[jax.Array]:
    """The full-size channels of one tensor, in first-layer row order (duplicates merged)."""
    m, v = acc["m"], acc["v"]
    rsqrt_v = jax.lax.rsqrt(v + 1e-6)
    xs = [g, p, m[0], m[1], m[2], v] + [m[k] * rsqrt_v for k in range(3)] + [rsqrt_v]
    if factor is None:
        vd = acc["vd"]
        xs += [g * F.safe_rsqrt(vd[k] + 1e-9) for k in range(3)]
        xs += [vd[k] for k in range(3)] + [jax.lax.rsqrt(vd[k] + 1e-8) for k in range(3)]
        return xs + [m[k] * jax.lax.rsqrt(vd[k] + 1e-6) for k in range(3)]
    return xs + [g * factor[k] for k in range(3)] + [m[k] * factor[k] for k in range(3)]


def _features(p, g, acc, step) -> jax.Array:
    """[*p.shape, 39] inputs of the MLP for one tensor (the reference form of ``_mlp_output``)."""
    fac = F.factored_terms(acc, g)
    m, v = acc["m"], acc["v"]
    rsqrt_v = jax.lax.rsqrt(v + 1e-6)
    groups = [g[None], p[None], m, v[None], m * rsqrt_v[None], rsqrt_v[None], fac["fac_g"]]
    if "row" in fac:
        groups += [
            fac["row"],
            fac["col"],
            jax.lax.rsqrt(fac["row"] + 1e-8),
            jax.lax.rsqrt(fac["col"] + 1e-8),
            m * fac["factor"],
        ]
    else:
        vd = fac["vd"]
        groups += [vd, vd, jax.lax.rsqrt(vd + 1e-8), jax.lax.rsqrt(vd + 1e-8), m * jax.lax.rsqrt(vd + 1e-6)]
    x = F.channels_last(jnp.concatenate(groups, axis=0))
    x = F.rms_normalize(x, tuple(range(p.ndim)), 1e-5)
    time = jnp.tanh(step.astype(jnp.float32) / TIME_SCALES - 1.0)
    return jnp.concatenate([x, jnp.broadcast_to(time, p.shape + time.shape)], axis=-1)


def scale_by_small_fc_lopt(theta: dict, exp_mult: float = 1e-3) -> optax.GradientTransformationExtraArgs:
    """The bare learned rule: updates are ``-d exp(exp_mult m)`` (to be scaled by lr)."""
    decays = theta["decays"]
    momentum = jnp.clip(_decay(MOMENTUM_DECAYS, decays["momentum"]), 0.0, 1.0)
    rms = jnp.clip(_decay(RMS_DECAY, decays["rms"]), 0.0, 1.0)
    factored = jnp.clip(_decay(FACTORED_DECAYS, decays["factored"]), 0.0, 1.0)

    def init_fn(params):
        return {"count": jnp.zeros((), jnp.int32), "acc": jax.tree.map(F.init_accumulators, params)}

    def update_fn(grads, state, params, **extra_args):
        del extra_args
        grads = jax.tree.map(F.nan_to_num, grads)

        def one(g, acc, p):
            acc = F.update_accumulators(acc, g, momentum, rms, factored)
            d, m = _mlp_output(theta["mlp"], p, g, acc, state["count"])
            return -d * jnp.exp(exp_mult * m), acc

        flat_g, treedef = jax.tree.flatten(grads)
        flat_acc = treedef.flatten_up_to(state["acc"])
        flat_p = treedef.flatten_up_to(params)
        results = [one(g, a, p) for g, a, p in zip(flat_g, flat_acc, flat_p)]
        updates = treedef.unflatten([r[0] for r in results])
        acc = treedef.unflatten([r[1] for r in results])
        return updates, {"count": state["count"] + 1, "acc": acc}

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def small_fc_lopt_optimizer(
    theta: dict, learning_rate: float = 1e-3, exp_mult: float = 1e-3
) -> optax.GradientTransformationExtraArgs:
    """AdafacMLP as a full optimizer: the learned step times ``learning_rate``."""
    return optax.chain(scale_by_small_fc_lopt(theta, exp_mult), optax.scale(learning_rate))


@register_arch("small_fc_lopt")
def small_fc_lopt(
    *, learning_rate: float = 1e-3, exp_mult: float = 1e-3, hidden_size: int = 4, hidden_layers: int = 2
) -> LearnedOptimizer:
    """AdafacMLP (Metz et al. 2022): 39 features -> MLP(4, 4) -> (direction, magnitude)."""
    return LearnedOptimizer(
        name="small_fc_lopt",
        init_theta=lambda key: init_theta(key, hidden_size, hidden_layers),
        make=small_fc_lopt_optimizer,
        hparams={"learning_rate": learning_rate, "exp_mult": exp_mult},
        flat_short_rows=True,  # its generation on image_mlp: 1.22x faster (member_steps.py --short-rows)
    )

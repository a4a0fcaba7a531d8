"""celo: a per-parameter learned MLP rule driven by a learned task-level LR scheduler.

Moudgil et al., "Celo: Training Versatile Learned Optimizers on a Compute Diet"
(TMLR 2025). We follow the authors' code (amoudgl/celo, ``Celo`` as built by
``get_optimizer("celo")``), which is more specific than the paper.

Per parameter tensor ``p`` with gradient ``g`` (clipped to [-1000, 1000]), at step
``t`` (0 on the first update) of a run of ``T = num_steps`` steps:

  * fixed-decay accumulators without bias correction (``features.py``): momentum
    b = (0.9, 0.99, 0.999), second moment b_v = 0.999, Adafactor b = (0.9, 0.99, 0.999);
  * 30 features, in this order: g, clip(g, -0.1, 0.1), p, m[3], v, m rsqrt(v+1e-6)[3],
    rsqrt(v+1e-6), fac_g[3], g rsqrt(v+1e-6), row[3], col[3], rsqrt(row+1e-8)[3],
    rsqrt(col+1e-8)[3], m row_f col_f[3]; for ndim < 2 the last five groups are
    vd, vd, rsqrt(vd+1e-8), rsqrt(vd+1e-8), m vd^-1/2. Each channel is normalised
    over all elements of the tensor: ``x rsqrt(1e-5 + mean x^2)``;
  * MLP 30 -> 4 -> 4 -> 3 (ReLU) gives (d, m, unused);
  * the scheduler, one scalar per step shared by every tensor:

        x_t  = [tanh(10 (t/T - s)), s in (.03,.1,.2,.4,.6,.8,.9,1,1.1)] ++ loss_features_t
        x'_t = W_a x_t + b_a + relu(W_b x_t + b_b)                        (64 wide)
        (h_t, c_t) = LSTM(x'_t, (h_{t-1}, c_{t-1})),  (h_{-1}, c_{-1}) learned
        eta_t = 0.1 exp(w . h_t + b)

    with the haiku LSTM cell: [i, g, f, o] = W [x'; h] + b, c = sigmoid(f + 1) c
    + sigmoid(i) tanh(g), h = sigmoid(o) tanh(c);
  * ``p <- p - lr d exp(exp_mult m) RMS(p) eta_t``, RMS(p) = sqrt(mean p^2 + 1e-9),
    lr = exp_mult = 1e-3.

Loss features (10 EMAs of the training loss, decays exp(-1/h) for h in
logspace(1, log10 T, 10)), per update with loss L and update count i (before it):
clip L to <= 2 |max_k e_k / (1 - b_k^(i+1))| (no clip at i = 0), ``e <- b e + (1-b) L``,
``ê = e / (1 - b^(i+1))``, ``runmin <- min(runmin, ê)``; then feature_k =
clip((ê_k - runmin_k) / max(1e-8, ê_{k+1} - runmin_k) - 1, -1, 1), k = 0..8, and
all zero while i + 1 <= 2.

Training phases. Celo is meta-trained in two phases: phase 1 trains the MLP
without the schedule (``scheduler="none"``: eta_t = 1), phase 2 freezes theta["mlp"]
and trains theta["scheduler"] (``scheduler="learned"``, the default and what is
used at test time). Theta always holds both modules so that phase 2 starts from
phase 1's theta; freezing a subtree is the meta-trainer's job.

Where we depart from the code, with no change in the function computed:
  * the code runs the scheduler once per tensor and maxes the mix layer over
    tensors, but every tensor gets the same inputs and initial state, so we run it
    once (the max over identical rows is the row);
  * the code builds a first mix Linear whose output is overwritten, and a
    ``rnn_to_controls`` head whose softmax over one control is 1: both are unused,
    so they are not in theta (ES would only spend noise on them);
  * in phase 1 the code still runs the LSTM and discards eta; we skip it.
Code details we keep although they differ from the AdafacMLP lineage: m vd^-1/2
has no epsilon for ndim < 2, and the clip reference of the loss EMAs uses the
pre-update means with the post-update bias correction. Weight decay (the AlgoPerf
``WeightDecayWrapper``, adding lambda p to g) is ``optax.add_decayed_weights(lambda)``
chained before this transform. When ``loss`` is not passed, the loss features stay
zero; when ``num_steps`` is not passed, the ``num_steps`` hparam is used.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from evolopt.architectures import features as F
from evolopt.architectures import fused, published
from evolopt.architectures.base import LearnedOptimizer
from evolopt.registry import ConfigError, register_arch

MOMENTUM_DECAYS = np.array([0.9, 0.99, 0.999], np.float32)  # numpy: importing must not start a JAX backend
RMS_DECAY = np.array(0.999, np.float32)  # numpy: importing must not start a JAX backend
FACTORED_DECAYS = np.array([0.9, 0.99, 0.999], np.float32)  # numpy: importing must not start a JAX backend
NUM_FEATURES = 30
FRACTION_SCALES = np.array([0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1], np.float32)
NUM_LOSS_EMAS = 10
NUM_SCHEDULER_INPUTS = len(FRACTION_SCALES) + NUM_LOSS_EMAS - 1  # 18
SCHEDULERS = ("learned", "none")


def init_theta(key: jax.Array, ff_hidden_size: int = 4, ff_hidden_layers: int = 2, lstm_hidden_size: int = 64) -> dict:
    """``{"mlp": per-parameter MLP, "scheduler": mix layers, LSTM, eta head, initial state}``.

    Dense layers: truncated normal with std 1/sqrt(fan_in), zero biases (haiku's
    default); the initial LSTM state is zero.
    """
    k_mlp, k_a, k_b, k_lstm, k_eta = jax.random.split(key, 5)
    n, h = NUM_SCHEDULER_INPUTS, lstm_hidden_size
    return {
        "mlp": F.init_mlp(k_mlp, [NUM_FEATURES] + [ff_hidden_size] * ff_hidden_layers + [3]),
        "scheduler": {
            "mix_linear": F.init_mlp(k_a, [n, h]),
            "mix_relu": F.init_mlp(k_b, [n, h]),
            "lstm": F.init_mlp(k_lstm, [2 * h, 4 * h]),  # input [x'_t; h_{t-1}]
            "eta": F.init_mlp(k_eta, [h, 1]),
            "init_h": jnp.zeros((h,)),
            "init_c": jnp.zeros((h,)),
        },
    }


def load_theta(path: str) -> dict:
    """Our theta from the authors' published Celo ``theta.state`` (flax msgpack, read as data).

    The file holds ``ff_mod_stack/~`` (the per-parameter MLP: first layer split into
    blocks ``w0__0..13`` in feature order, stacked over a leading axis of 1),
    ``lstm_init_state/{hidden, cell}`` and haiku's ``rnn_params``: ``linear`` (the mix
    layer whose output the code overwrites), ``linear_1`` (the ReLU-and-max branch),
    ``linear_2`` (the linear branch), ``rnn/linear`` (the LSTM), ``step_size`` (the eta
    head) and ``rnn_to_controls`` (unused). Sizes are read from the file.
    """
    tree = published.read_state(path, "Celo")
    try:
        ff, rnn, init = tree["ff_mod_stack"]["~"], tree["rnn_params"], tree["lstm_init_state"]
        blocks = [ff[f"w0__{i}"][0] for i in range(14)]
        depth = fused.mlp_depth(ff)
        mlp = {"w0": np.concatenate(blocks, axis=0), "b0": ff["b0"][0]}
        mlp |= {f"{kind}{i}": ff[f"{kind}{i}"][0] for i in range(1, depth) for kind in ("w", "b")}
        dense = lambda d: {"w0": d["w"], "b0": d["b"]}  # noqa: E731
        theta = {
            "mlp": mlp,
            "scheduler": {
                "mix_linear": dense(rnn["linear_2"]),
                "mix_relu": dense(rnn["linear_1"]),
                "lstm": dense(rnn["rnn/linear"]),
                "eta": dense(rnn["step_size"]),
                "init_h": init["hidden"][0],
                "init_c": init["cell"][0],
            },
        }
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a Celo theta.state (missing or malformed {e})") from None
    if theta["mlp"]["w0"].shape[0] != NUM_FEATURES:
        raise ValueError(f"{path}: first layer takes {theta['mlp']['w0'].shape[0]} features, Celo has {NUM_FEATURES}")
    return theta


def theta_sizes(theta: dict) -> dict[str, int]:
    """The ``arch=celo`` options (hidden sizes) a theta was built with."""
    return {
        "ff_hidden_size": int(theta["mlp"]["b0"].shape[0]),
        "ff_hidden_layers": len([k for k in theta["mlp"] if k.startswith("w")]) - 1,
        "lstm_hidden_size": int(theta["scheduler"]["init_h"].shape[0]),
    }


# ----------------------------------------------------------------- scheduler inputs


def fraction_left_features(step: jax.Array, num_steps: jax.Array) -> jax.Array:
    """``tanh(10 (t/T - s))`` for the 9 offsets s: the 9 time inputs of the scheduler."""
    frac = jnp.asarray(step, jnp.float32) / jnp.asarray(num_steps, jnp.float32)
    return jnp.tanh(10.0 * (frac - FRACTION_SCALES))


def loss_decays(num_steps: jax.Array) -> jax.Array:
    """``exp(-1/h)`` for 10 half-lives h log-spaced from 10 to T."""
    log_t = jnp.log10(jnp.asarray(num_steps, jnp.float32))
    halflife = 10.0 ** jnp.linspace(1.0, log_t, NUM_LOSS_EMAS)
    return jnp.exp(-1.0 / halflife)


def init_loss_buffer() -> dict:
    return {
        "means": jnp.zeros((NUM_LOSS_EMAS,)),
        "running_min": jnp.full((NUM_LOSS_EMAS,), 1e12),
        "iteration": jnp.zeros((), jnp.int32),
    }


def update_loss_buffer(buf: dict, loss: jax.Array, decays: jax.Array) -> dict:
    """One EMA step of the 10 loss averages, after clipping spikes (see module doc)."""
    i = buf["iteration"]
    # The code's clip reference divides the old means by 1 - b^(i+1); kept as is.
    approx_max = jnp.max(buf["means"] / (1.0 - decays ** (i + 1)))
    approx_max = jnp.where(i == 0, loss, approx_max)
    loss = jnp.minimum(2.0 * jnp.abs(approx_max), loss)
    means = decays * buf["means"] + (1.0 - decays) * loss
    corrected = means / (1.0 - decays ** (i + 1))
    return {
        "means": means,
        "running_min": jnp.minimum(buf["running_min"], corrected),
        "iteration": i + 1,
    }


def loss_features(buf: dict, decays: jax.Array) -> jax.Array:
    """9 features: how far each EMA sits above its running min, relative to the next EMA."""
    corrected = buf["means"] / (1.0 - decays ** buf["iteration"])
    running_min = buf["running_min"][:-1]
    den = jnp.maximum(1e-8, corrected[1:] - running_min)
    feat = jnp.clip((corrected[:-1] - running_min) / den - 1.0, -1.0, 1.0)
    return jnp.where(buf["iteration"] <= 2, 0.0, feat)  # the first EMAs are noise


def scheduler_step(sched: dict, x: jax.Array, hc: tuple) -> tuple[jax.Array, tuple]:
    """``(eta_t, (h_t, c_t))`` from the 18 scheduler inputs ``x`` and the previous state."""
    x = F.apply_mlp(sched["mix_linear"], x) + jax.nn.relu(F.apply_mlp(sched["mix_relu"], x))
    h, c = hc
    i, g, f, o = jnp.split(F.apply_mlp(sched["lstm"], jnp.concatenate([x, h])), 4)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    eta = 0.1 * jnp.exp(F.apply_mlp(sched["eta"], h)[0])
    return eta, (h, c)


# ----------------------------------------------------------------- per-parameter rule


def _features(p: jax.Array, g: jax.Array, acc: dict) -> jax.Array:
    """[*p.shape, 30] normalised inputs of the MLP for one tensor."""
    fac = F.factored_terms(acc, g)
    m, v = acc["m"], acc["v"]
    rsqrt_v = jax.lax.rsqrt(v + 1e-6)
    groups = [
        g[None],
        jnp.clip(g, -0.1, 0.1)[None],
        p[None],
        m,
        v[None],
        m * rsqrt_v[None],
        rsqrt_v[None],
        fac["fac_g"],
        (g * rsqrt_v)[None],
    ]
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
        # Celo has no epsilon here (AdafacMLP uses vd + 1e-6); vd >= (1-b) 1e-30 > 0.
        groups += [vd, vd, jax.lax.rsqrt(vd + 1e-8), jax.lax.rsqrt(vd + 1e-8), m * jax.lax.rsqrt(vd)]
    x = F.channels_last(jnp.concatenate(groups, axis=0))
    return F.rms_normalize(x, tuple(range(p.ndim)), 1e-5)


def _mlp_output(mlp: dict, p: jax.Array, g: jax.Array, acc: dict) -> list[jax.Array]:
    """The MLP's outputs ``[d, m]`` (each of p's shape) without the [*shape, 30] input
    (``_features`` is the reference form; see ``fused.py``). The row/column channels of a
    factored tensor are mixed on their small vectors; duplicated channels share one term."""
    if p.ndim == 0:  # a scalar normalises over its one element, as a 1-element vector
        p, g = p.reshape(1), g.reshape(1)
        acc = jax.tree.map(lambda a: a.reshape(a.shape + (1,)), acc)
    axes = tuple(range(p.ndim))
    w0 = mlp["w0"]
    dims = F.factored_dims(p.shape)
    prims = (p, g, acc) if dims is None else (p, g, acc, F.factor_vectors(acc, dims)[0])
    xs = _full_channels(*prims)
    again = _full_channels(*jax.lax.optimization_barrier(prims))  # see fused.first_layer
    rows = list(w0[:15])
    if dims is None:
        rows += list(w0[15:18] + w0[18:21]) + list(w0[21:24] + w0[24:27]) + list(w0[27:30])
        h = fused.first_layer(rows, xs, mlp["b0"], axes, 1e-5, stats_xs=again)
    else:
        _, row, col = F.factor_vectors(acc, dims)
        rows += list(w0[27:30])
        small = [row[k] for k in range(3)] + [col[k] for k in range(3)]
        small += [jax.lax.rsqrt(x + 1e-8) for x in small]
        h = fused.first_layer(rows, xs, mlp["b0"], axes, 1e-5, list(w0[15:27]), small, stats_xs=again)
    return fused.mlp_heads(mlp, h, (0, 1))


def _full_channels(p, g, acc, factor=None) -> list[jax.Array]:
    """The full-size channels of one tensor, in first-layer row order (duplicates merged)."""
    m, v = acc["m"], acc["v"]
    rs = jax.lax.rsqrt(v + 1e-6)
    xs = [g, jnp.clip(g, -0.1, 0.1), p, m[0], m[1], m[2], v] + [m[k] * rs for k in range(3)] + [rs]
    if factor is None:
        vd = acc["vd"]
        xs += [g * F.safe_rsqrt(vd[k] + 1e-9) for k in range(3)] + [g * rs]
        xs += [vd[k] for k in range(3)] + [jax.lax.rsqrt(vd[k] + 1e-8) for k in range(3)]
        return xs + [m[k] * jax.lax.rsqrt(vd[k]) for k in range(3)]  # no epsilon, as the authors
    return xs + [g * factor[k] for k in range(3)] + [g * rs] + [m[k] * factor[k] for k in range(3)]


def _tensor_step(mlp: dict, g: jax.Array, acc: dict, p: jax.Array, exp_mult: float, scale: jax.Array):
    """``(-d exp(exp_mult m) RMS(p) scale, new accumulators)`` for one tensor."""
    g = jnp.clip(g, -1000.0, 1000.0)
    acc = F.update_accumulators(acc, g, MOMENTUM_DECAYS, RMS_DECAY, FACTORED_DECAYS)
    d, m = _mlp_output(mlp, p, g, acc)
    param_scale = jnp.sqrt(jnp.mean(jnp.square(p)) + 1e-9)
    step = (d * jnp.exp(exp_mult * m)).reshape(p.shape) * (param_scale * scale)
    return -step.astype(p.dtype), acc


def _schedule(sched: dict, state: dict, loss: Any, total: Any) -> tuple[jax.Array, dict]:
    """``(eta_t, {"loss_buffer", "lstm"})``: the learned scheduler's step for this update."""
    decays = loss_decays(total)
    buf = state["loss_buffer"]
    if loss is not None:
        buf = update_loss_buffer(buf, jnp.asarray(loss, jnp.float32), decays)
        loss_feat = loss_features(buf, decays)
    else:
        loss_feat = jnp.zeros((NUM_LOSS_EMAS - 1,))
    x = jnp.concatenate([fraction_left_features(state["count"], total), loss_feat])
    eta, lstm = scheduler_step(sched, x, state["lstm"])
    return eta, {"loss_buffer": buf, "lstm": lstm}


def celo_optimizer(
    theta: dict,
    learning_rate: float = 1e-3,
    exp_mult: float = 1e-3,
    scheduler: str = "learned",
    num_steps: int = 10_000,
) -> optax.GradientTransformationExtraArgs:
    """Celo as an optax transform; ``update`` takes extra args ``loss`` and ``num_steps``.

    Args:
      theta: from ``init_theta``.
      learning_rate: the rule's step multiplier (Celo's ``step_mult``).
      exp_mult: scale of the magnitude output inside ``exp``.
      scheduler: ``"learned"`` multiplies by eta_t; ``"none"`` (phase 1) does not.
      num_steps: planned run length T, used when ``update`` gets no ``num_steps``.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{scheduler}'; valid choices: {', '.join(SCHEDULERS)}")
    use_schedule = scheduler == "learned"
    sched = theta["scheduler"]
    default_steps = num_steps

    def init_fn(params: Any) -> dict:
        state = {"count": jnp.zeros((), jnp.int32), "acc": jax.tree.map(F.init_accumulators, params)}
        if use_schedule:
            state |= {"loss_buffer": init_loss_buffer(), "lstm": (sched["init_h"], sched["init_c"])}
        return state

    def update_fn(grads, state, params, loss=None, num_steps=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("celo needs params (they are an input feature and set the step scale)")
        total = num_steps if num_steps is not None else default_steps
        new_state, eta = {"count": state["count"] + 1}, jnp.ones(())
        if use_schedule:
            eta, sched_state = _schedule(sched, state, loss, total)
            new_state |= sched_state
        flat_g, treedef = jax.tree.flatten(grads)
        flat_acc, flat_p = treedef.flatten_up_to(state["acc"]), treedef.flatten_up_to(params)
        scale = learning_rate * eta
        results = [_tensor_step(theta["mlp"], g, a, p, exp_mult, scale) for g, a, p in zip(flat_g, flat_acc, flat_p)]
        new_state["acc"] = treedef.unflatten([r[1] for r in results])
        return treedef.unflatten([r[0] for r in results]), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@register_arch("celo")
def celo(
    *,
    learning_rate: float = 1e-3,
    exp_mult: float = 1e-3,
    scheduler: str = "learned",
    num_steps: int = 10_000,
    ff_hidden_size: int = 4,
    ff_hidden_layers: int = 2,
    lstm_hidden_size: int = 64,
) -> LearnedOptimizer:
    """Celo (Moudgil et al. 2025): 30 features -> MLP(4, 4) -> (d, m), times a learned LSTM LR.

    ``scheduler="none"`` is meta-training phase 1; ``"learned"`` is phase 2 and test time.
    """
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{scheduler}'; valid choices: {', '.join(SCHEDULERS)}")
    return LearnedOptimizer(
        name="celo",
        init_theta=lambda key: init_theta(key, ff_hidden_size, ff_hidden_layers, lstm_hidden_size),
        make=celo_optimizer,
        hparams={
            "learning_rate": learning_rate,
            "exp_mult": exp_mult,
            "scheduler": scheduler,
            "num_steps": num_steps,
        },
        flat_short_rows=True,  # its generation on image_mlp: 1.07-1.12x faster (member_steps.py --short-rows)
    )

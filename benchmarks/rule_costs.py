"""What each learned rule must compute per element, and this machine's rate for such work.

``mlp_macs``: the multiply-adds per element of a matrix that a rule's per-element MLP must do (its
full-size channels x the first layer's width, the hidden layers, the heads it reads);
``elementwise_rate``: FLOPs/ms of a narrow MLP's hidden units run elementwise; ``best_ms``: the
fastest of several calls. Shared by ``arch_step_time.py`` (one update's floor), ``loop_floors.py``
(the fitness loop's) and ``compile_time.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def best_ms(fn: Any, *args: Any, repeats: int) -> float:
    """Fastest of ``repeats`` calls: a machine rate is what it can do, not what it did while busy."""
    jax.block_until_ready(fn(*args))
    walls = []
    for _ in range(repeats):
        w0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - w0)
    return 1e3 * min(walls)


EW_LAYERS = 8  # 4x4 layers in the elementwise-rate probe (128 multiply-adds per element)


def elementwise_rate(arrays: list, jit_fn: Callable[[Callable[..., Any]], Any], repeats: int) -> float:
    """FLOPs/ms of ``EW_LAYERS`` 4x4 dense + ReLU layers per element of ``arrays`` (as a narrow
    per-element MLP's hidden units run), jitted by ``jit_fn``, best of ``repeats`` calls."""
    rng = np.random.default_rng(0)
    weights = rng.uniform(-0.5, 0.5, (EW_LAYERS, 4, 4)).astype(np.float32)
    biases = rng.uniform(-0.1, 0.1, (EW_LAYERS, 4)).astype(np.float32)

    def narrow_mlp(xs):  # EW_LAYERS x 16 multiply-adds per element
        out = []
        for x in xs:
            hs = [x * (1.0 + 0.1 * k) for k in range(4)]
            for w, b in zip(weights, biases):
                hs = [jax.nn.relu(b[k] + sum(w[j, k] * hs[j] for j in range(4))) for k in range(4)]
            out.append(sum(hs))
        return out

    ms = best_ms(jit_fn(narrow_mlp), arrays, repeats=repeats)
    return 2 * 16 * EW_LAYERS * sum(x.size for x in arrays) / ms


CELO2_RULES = ("celo2", "celo2_base", "celo2_ns_input")


def full_size_channels(name: str) -> int | None:
    """How many channels ``name``'s first layer mixes per element of a matrix: the length of its
    full-size channel list, as its update computes it (the Adafactor row/column channels are
    mixed on their small vectors and the time features fold into the bias, so neither costs
    multiply-adds per element); None for a rule without a per-element MLP we know."""
    from evolopt.architectures import celo, celo2, small_fc_lopt
    from evolopt.architectures import features as F

    p = jnp.ones((3, 5))
    acc = F.init_accumulators(p)
    factors = F.factor_vectors(acc, F.factored_dims(p.shape))[0]
    if name in CELO2_RULES:
        return len(celo2._channels(p, p, acc, factors)) + (name == "celo2_ns_input")  # + NS5(m_0)
    module = {"small_fc_lopt": small_fc_lopt, "mulo": small_fc_lopt, "celo": celo}.get(name)
    return None if module is None else len(module._full_channels(p, p, acc, factors))


def mlp_macs(name: str, theta: Any, hparams: dict) -> tuple[int, bool]:
    """(multiply-adds per element of a matrix that a rule's per-element MLP must do, whether it runs
    as matmuls): its full-size channels x the first layer's width, the hidden layers, and the
    output heads the rule reads (celo2's rules only the direction when ``exp_mult`` is 0, small_fc_lopt's,
    mulo's and celo's direction and magnitude). A rule whose channels we do not know counts every
    first-layer row and every head. Layers at least ``fused.WIDE`` wide run block by block as
    matmuls on tensors larger than one block (every kernel of the benchmark's model)."""
    from evolopt.architectures import fused

    mlp = next((theta[key] for key in ("mlp", "ff_mod_stack") if isinstance(theta, dict) and key in theta), None)
    if mlp is None:
        return 0, False
    mlp = mlp.get("~", mlp)  # celo2's haiku-style tree
    width = np.shape(mlp["b0"])[0]
    rows = sum(np.shape(w)[0] for key, w in mlp.items() if key == "w0" or key.startswith("w0__"))  # celo2 splits w0
    hidden = [np.shape(mlp[f"w{i}"]) for i in range(1, fused.mlp_depth(mlp))]  # [fan_in, fan_out], the head last
    channels, heads = full_size_channels(name), hidden[-1][1]
    if channels is not None:
        heads = 1 if name in CELO2_RULES and hparams.get("exp_mult", 0.0) == 0 else 2
    macs = (channels or rows) * width + sum(a * b for a, b in hidden[:-1]) + hidden[-1][0] * heads
    return macs, max([width] + [b for _, b in hidden]) >= fused.WIDE

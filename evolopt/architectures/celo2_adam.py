"""Celo2's Adam group: the rule for biases, embeddings and 1-D leaves, and which leaves get it.

Celo2 (``celo2.celo2``) sends leaves whose ``/``-joined path matches a regex (by default biases and
embeddings) and every leaf with ndim < 2 to Adam as the authors write it: ``m / sqrt(v + eps)`` with
eps inside the root and no bias correction.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax


def scale_by_celo2_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, bias_correction: bool = False
) -> optax.GradientTransformation:
    """Adam as Celo2 uses it: ``m / sqrt(v + eps)``, eps inside the root.

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``; no bias correction by default.
    """

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return {"count": jnp.zeros((), jnp.int32), "m": zeros, "v": zeros}

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state["count"])
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], updates)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state["v"], updates)
        mh, vh = m, v
        if bias_correction:
            mh = optax.tree.bias_correction(m, b1, count)
            vh = optax.tree.bias_correction(v, b2, count)
        step = jax.tree.map(lambda a, b, g: (a * jax.lax.rsqrt(b + eps)).astype(g.dtype), mh, vh, updates)
        return step, {"count": count, "m": m, "v": v}

    return optax.GradientTransformation(init_fn, update_fn)


def path_string(path: tuple) -> str:
    """``params/Dense_0/bias``-style name of a pytree path (the authors' regex format)."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def adam_labels(params: Any, param_regex: str, route_1d_to_adam: bool = True) -> Any:
    """``"adam"`` for leaves whose path matches ``param_regex`` (or ndim < 2), else ``"celo2"``."""
    pattern = re.compile(param_regex) if param_regex else None

    def label(path, x):
        to_adam = bool(pattern and pattern.search(path_string(path)))
        to_adam |= route_1d_to_adam and jnp.ndim(x) < 2
        return "adam" if to_adam else "celo2"

    return jax.tree_util.tree_map_with_path(label, params)

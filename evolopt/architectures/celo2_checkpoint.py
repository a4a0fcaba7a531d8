"""Celo2's published checkpoint format (``theta.state``, flax msgpack): structure, shapes, read, write.

``ff_mod_stack/~`` holds the MLP: first-layer blocks ``w0__0..w0__13`` (one per feature
block, ``BLOCK_SIZES`` channels each) of shape [channels, hidden], then ``w1..wL`` and
``b0..bL``; the head has 3 outputs.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.architectures import published

# Channels of feature blocks 0..13, in the order that fixes w0__0..w0__13.
BLOCK_SIZES = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)


def _expected_shapes(leaf: dict) -> dict[str, tuple[int, ...]]:
    """Shapes a theta leaf dict must have; hidden width and depth read from its keys."""
    hidden = int(np.shape(leaf["b0"])[0]) if "b0" in leaf else 8
    depth = 1 + max([int(k[1:]) for k in leaf if re.fullmatch(r"[wb]\d+", k)] or [2])
    want = {f"w0__{i}": (c, hidden) for i, c in enumerate(BLOCK_SIZES)}
    for i in range(depth):
        fan_out = 3 if i == depth - 1 else hidden
        if i > 0:
            want[f"w{i}"] = (hidden, fan_out)
        want[f"b{i}"] = (fan_out,)
    return want


def validate_theta(theta: Any, source: str = "theta") -> dict:
    """Check ``theta`` has the published structure and shapes; one-line ValueError if not."""
    if not isinstance(theta, dict) or set(theta) != {"ff_mod_stack"}:
        raise ValueError(f"{source}: expected a single top-level key 'ff_mod_stack'")
    leaf = theta["ff_mod_stack"].get("~") if isinstance(theta["ff_mod_stack"], dict) else None
    if not isinstance(leaf, dict) or set(theta["ff_mod_stack"]) != {"~"}:
        raise ValueError(f"{source}: expected 'ff_mod_stack' to hold exactly a dict '~' of arrays")
    want = _expected_shapes(leaf)
    for name, shape in want.items():
        if name not in leaf:
            raise ValueError(f"{source}: missing key 'ff_mod_stack/~/{name}'")
        got = tuple(np.shape(leaf[name]))
        if got != shape:
            raise ValueError(f"{source}: 'ff_mod_stack/~/{name}' has shape {got}, expected {shape}")
    extra = sorted(set(leaf) - set(want))
    if extra:
        raise ValueError(f"{source}: unexpected key 'ff_mod_stack/~/{extra[0]}'")
    return theta


def load_theta(path: str) -> dict:
    """Read a Celo2 ``theta.state`` (flax ``to_bytes`` msgpack) without flax or pickle."""
    theta = validate_theta(published.read_state(path, "Celo2"), source=str(path))
    return jax.tree.map(jnp.asarray, theta)


def save_theta(theta: dict, path: str) -> None:
    """Write ``theta`` in the format of ``flax.serialization.to_bytes`` (readable by flax)."""
    published.write_state(validate_theta(theta), path)

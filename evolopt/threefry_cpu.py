"""jax's Threefry-2x32 hash, compiled inline on CPU: the same bits without a loop per random call.

Every ``jax.random`` call with the default key type hashes with Threefry-2x32 (Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3"; 20 rounds). On CPU jax lowers it as a 5-step
``while`` loop (to keep compile times short), and XLA CPU runs each loop step as a few kernels of a
handful of elements plus copies of the loop's carry: a meta-training inner step folds its step into
the trajectory key and draws a minibatch, so on small tasks most kernels launched are this loop's
(small_fc_lopt on image_mlp, 32 members x 4 tasks x 50 steps: 31,141 kernel launches per generation,
13,106 with the rounds inline; ``benchmarks/kernel_profile.py``). Other backends already inline them.

``inline_threefry_on_cpu`` registers, for the CPU platform, a lowering of jax's public
``threefry2x32_p`` that writes the 20 rounds out (``threefry2x32``, below). The hash is the same
function, so every random number is bit for bit what it was (tests: Random123's known-answer vectors,
jax's hash on random keys and counters, and a generation's kinds of draws against a fresh interpreter
that keeps jax's loop); only how XLA receives it changes, and compiles got shorter too. It applies to
every computation this process lowers afterwards, so evolopt calls it only where it compiles its own
steps (``xla_cpu.jit``: generations and evaluation; the evaluation grid; ``diagnose``'s probes).
"""

from __future__ import annotations

import jax
import numpy as np

KEY_PARITY = np.uint32(0x1BD11BDA)  # the third key word is k0 ^ k1 ^ this (Threefish's key schedule)
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32's rotation constants, alternating by group


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds of the counter words ``(x0, x1)`` under the key ``(k0, k1)``.

    With ``ks = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)``: ``x += (ks0, ks1)``; then 5 groups of 4 rounds
    ``x0 += x1; x1 = rotl(x1, r) ^ x0`` (rotations ``13 15 26 6`` in even groups, ``17 29 16 24`` in
    odd ones), after group ``g`` (0-based) the key injection ``x0 += ks[(g+1) % 3]``,
    ``x1 += ks[(g+2) % 3] + g + 1``. All uint32 arithmetic wraps.

    Args:
      k0, k1: key words (uint32, broadcastable to the counters).
      x0, x1: counter words (uint32, one shape).

    Returns:
      The two hashed words, of the counters' shape.
    """
    ks = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


_REGISTERED = False


def inline_threefry_on_cpu() -> bool:
    """Lower jax's Threefry hash inline on CPU from now on in this process (see the module's docstring).

    Returns:
      Whether the lowering is registered: False where this jax lacks the public handles it needs
      (``jax.extend.random.threefry2x32_p``, ``jax.interpreters.mlir.register_lowering``), in which
      case jax's own loop stays, with the same numbers.
    """
    global _REGISTERED
    if _REGISTERED:
        return True
    try:
        from jax.extend.random import threefry2x32_p
        from jax.interpreters import mlir
    except ImportError:
        return False
    if not hasattr(mlir, "register_lowering") or not hasattr(mlir, "lower_fun"):
        return False
    # The primitive's operands have broadcastable shapes (a key's words, a batch of counters); jnp broadcasts them.
    rounds = mlir.lower_fun(lambda *words: list(threefry2x32(*words)), multiple_results=True)
    mlir.register_lowering(threefry2x32_p, rounds, platform="cpu")
    _REGISTERED = True
    return True

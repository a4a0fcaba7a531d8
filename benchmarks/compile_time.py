"""How long a learned rule's update takes to compile, per parameter tensor, and what grouping same-shaped
tensors would save.

Every rule's update is written per tensor (a Python loop over the pytree's leaves), so XLA compiles one copy
of the fused code per tensor: on the 70-tensor, 5.3M-param LM of ``real_model.py`` celo2_base's update alone
took 8.8 s to trace and lower and 44 s to compile (2-core AMD EPYC, Zen 5, session 24). This prints, for N
same-shaped tensors, the update compiled as it is (``unrolled``) against the same rule ``jax.vmap``-ed over
the N tensors stacked inside the jit, its state kept stacked (``grouped``: one copy of the code per distinct
shape), with each one's compile time, its best step time and the largest difference of their updates
(exits 1 if they differ by more than rounding). A probe for a future change, not a product path.

    python benchmarks/compile_time.py [--archs celo2_base,small_fc_lopt] [--tensors 16] [--shape 256,256]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from arch_step_time import best_ms  # benchmarks/ is on the path when run as a script

from evolopt import xla_cpu


def compile_s(fn: Any, *args: Any) -> tuple[Any, float]:
    """(the compiled ``fn`` for ``args``, seconds to trace, lower and compile it)."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def compare(tx: Any, n: int, shape: tuple[int, ...]) -> tuple[float, float, float, float, float]:
    """(unrolled compile s, grouped compile s, unrolled step ms, grouped step ms, max |difference|)."""
    names = [f"w{i:03d}" for i in range(n)]
    keys = jax.random.split(jax.random.PRNGKey(1), 2 * n)
    params = {k: jax.random.normal(keys[i], shape) for i, k in enumerate(names)}
    grads = {k: 0.01 * jax.random.normal(keys[n + i], shape) for i, k in enumerate(names)}

    def one(g: jax.Array, s: Any, p: jax.Array) -> tuple[jax.Array, Any]:
        u, s = tx.update({"w": g}, s, {"w": p})
        return u["w"], s

    def grouped(g: dict, s: Any, p: dict) -> tuple[dict, Any]:  # the model's pytree in and out; state stacked
        u, s = jax.vmap(one)(jnp.stack([g[k] for k in names]), s, jnp.stack([p[k] for k in names]))
        return {k: u[i] for i, k in enumerate(names)}, s

    state = tx.init(params)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *[tx.init({"w": params[k]}) for k in names])
    unrolled, unrolled_s = compile_s(xla_cpu.jit(tx.update, True, 512), grads, state, params)
    group, grouped_s = compile_s(xla_cpu.jit(grouped, True, 512), grads, stacked, params)
    u, ug = unrolled(grads, state, params)[0], group(grads, stacked, params)[0]
    diff = max(float(jnp.max(jnp.abs(u[k] - ug[k]))) for k in names)
    step_ms = best_ms(unrolled, grads, state, params, repeats=10)
    return unrolled_s, grouped_s, step_ms, best_ms(group, grads, stacked, params, repeats=10), diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="celo2_base,small_fc_lopt,celo2")
    ap.add_argument("--tensors", type=int, default=16)
    ap.add_argument("--shape", default="256,256")
    args = ap.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))

    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    print(f"{args.tensors} tensors of {shape}, compiled with xla_cpu.REASSOCIATE and 512-bit vectors")
    print(f"{'arch':14s} {'compile s':>10s} {'grouped s':>10s} {'step ms':>8s} {'grouped':>8s} {'max diff':>9s}")
    worst = 0.0
    for name in args.archs.split(","):
        arch = ARCHITECTURES.build(name)
        tx = arch.optimizer(arch.init_theta(jax.random.PRNGKey(0)))
        a, b, c, d, diff = compare(tx, args.tensors, shape)
        print(f"{name:14s} {a:10.1f} {b:10.1f} {c:8.2f} {d:8.2f} {diff:9.1e}")
        worst = max(worst, diff)
    if worst > 1e-6:  # an update is ~1e-3 here: more than rounding means the grouped form computes another rule
        print(f"grouped and unrolled updates differ by {worst:.1e}, more than rounding", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Time one jitted optimizer update of every registered architecture against optax.adam.

Model: 8 dense 512x512 layers with biases (2.1M parameters). For each optimizer we
jit ``update(grads, state, params)``, warm up, and report the median wall time of
``--repeats`` calls (``block_until_ready``), plus the process CPU time per call,
which is less sensitive to other jobs on a shared machine.

    python benchmarks/arch_step_time.py [--repeats 10] [--layers 8] [--width 512]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax


def make_model(layers: int, width: int) -> tuple[dict, dict]:
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * layers)
    params, grads = {}, {}
    for i in range(layers):
        params[f"Dense_{i}"] = {
            "kernel": jax.random.normal(keys[2 * i], (width, width)) / width**0.5,
            "bias": jnp.zeros((width,)),
        }
        grads[f"Dense_{i}"] = {
            "kernel": 1e-2 * jax.random.normal(keys[2 * i + 1], (width, width)),
            "bias": 1e-2 * jnp.ones((width,)),
        }
    return params, grads


def time_update(tx: optax.GradientTransformation, params: Any, grads: Any, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of one jitted update, after two warm-up calls."""
    state = tx.init(params)
    kwargs = {"loss": jnp.float32(1.0), "num_steps": 1000}
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        kwargs = {}
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **kwargs))
    for _ in range(2):
        jax.block_until_ready(update(grads, state, params))
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(update(grads, state, params))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def row(name: str, wall: float, cpu: float, adam: tuple[float, float]) -> None:
    ratios = f"{wall:9.1f} {wall / adam[0]:8.1f}x {cpu:9.1f} {cpu / adam[1]:8.1f}x"
    print(f"{name:28s} {ratios}", flush=True)


def celo2_breakdown(params: Any, grads: Any, repeats: int, adam: tuple[float, float]) -> None:
    """Split celo2's step into features+MLP, Newton-Schulz and the rest, by variants."""
    from evolopt.architectures import celo2 as C

    theta = C.init_theta(jax.random.PRNGKey(0))
    full = time_update(C.celo2(theta), params, grads, repeats)
    no_ns = time_update(C.celo2(theta, orthogonalize=False), params, grads, repeats)
    real_direction = C._direction
    # "rest": accumulators, output RMS normalisation, Adam on biases, routing.
    C._direction = lambda mlp, p, g, acc, exp_mult: g * acc["m"][0]
    try:
        rest = time_update(C.celo2(theta, orthogonalize=False), params, grads, repeats)
    finally:
        C._direction = real_direction
    kernels = [layer["kernel"] for layer in params.values()]
    ns_fn = jax.jit(lambda xs: [C.newton_schulz(x) for x in xs])
    jax.block_until_ready(ns_fn(kernels))
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(ns_fn(kernels))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    ns_alone = 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)
    print("\ncelo2 breakdown (by timing variants)")
    row("celo2 (full)", *full, adam)
    row("  features + MLP", no_ns[0] - rest[0], no_ns[1] - rest[1], adam)
    row("  Newton-Schulz (full-no_ns)", full[0] - no_ns[0], full[1] - no_ns[1], adam)
    row("  Newton-Schulz (alone)", *ns_alone, adam)
    row("  rest (acc, norm, adam)", *rest, adam)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args()

    try:
        import evolopt.architectures  # noqa: F401  (registers every architecture)
    except Exception as e:  # a colleague's module may be mid-edit: keep what registered
        print(
            f"note: importing evolopt.architectures failed ({type(e).__name__}: {e}); "
            "using the architectures that did register"
        )
        import evolopt.architectures.celo2  # noqa: F401
    from evolopt.registry import ARCHITECTURES

    params, grads = make_model(args.layers, args.width)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"model: {args.layers} x dense {args.width}x{args.width} + biases = {n:,} params; "
        f"backend {jax.default_backend()}, {jax.device_count()} device(s)"
    )
    print(f"{'arch':28s} {'wall ms':>9s} {'ratio':>9s} {'cpu ms':>9s} {'ratio':>9s}")
    adam = time_update(optax.adam(1e-3), params, grads, args.repeats)
    row("optax.adam", *adam, adam)
    for name in ARCHITECTURES.names():
        try:
            arch = ARCHITECTURES.build(name)
            tx = arch.optimizer(arch.init_theta(jax.random.PRNGKey(0)))
            result = time_update(tx, params, grads, args.repeats)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else ""
            print(f"{name:28s} skipped: {type(e).__name__}: {reason}")
            continue
        row(name, *result, adam)
    if not args.no_breakdown and "celo2" in ARCHITECTURES:
        celo2_breakdown(params, grads, args.repeats, adam)


if __name__ == "__main__":
    main()

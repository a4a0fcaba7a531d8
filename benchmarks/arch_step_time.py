"""Time one jitted optimizer update of every registered architecture against optax.adam and its floor.

Model: 8 dense 512x512 layers with biases (2.1M parameters). For each optimizer we
jit ``update(grads, state, params)``, warm up, and report the median wall time of
``--repeats`` calls (``block_until_ready``), plus the process CPU time per call,
which is less sensitive to other jobs on a shared machine.

Each rule's floor, measured in the same run: the bytes one update must move (params and
grads read, its state read and written, the update written) at this machine's measured
copy bandwidth, plus the FLOPs it must do (the per-element MLP's multiply-adds, Newton-Schulz
matmuls) at the measured float32 matmul rate (512x512 matmuls, the shapes NS runs). Printed
as ``x floor``; ``celo2 / NS`` is celo2's time over bare Newton-Schulz on the same matrices.

    python benchmarks/arch_step_time.py [--repeats 5] [--layers 8] [--width 512] [--archs celo2,mulo]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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
    """(median wall ms, median CPU ms) of one jitted update, after two warm-up calls; an update of a few
    milliseconds is timed over more calls (>= 0.5 s in all, at most 200), so its median is as steady as a slow one's."""
    state = tx.init(params)
    kwargs = {"loss": jnp.float32(1.0), "num_steps": 1000}
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        kwargs = {}
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **kwargs))
    for _ in range(2):
        w0 = time.perf_counter()
        jax.block_until_ready(update(grads, state, params))
    calls = max(repeats, min(200, int(0.5 / max(time.perf_counter() - w0, 1e-6))))
    walls, cpus = [], []
    for _ in range(calls):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(update(grads, state, params))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def row(name: str, wall: float, cpu: float, adam: tuple[float, float], floor: float | None = None) -> None:
    fl = f"{floor:9.1f} {wall / floor:7.1f}x" if floor else f"{'':9s} {'':8s}"
    print(f"{name:16s} {wall:9.1f} {wall / adam[0]:7.1f}x {fl} {cpu:9.1f} {cpu / adam[1]:7.1f}x", flush=True)


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


def _best_ms(fn: Any, *args: Any, repeats: int) -> float:
    """Fastest of ``repeats`` calls: a machine rate is what it can do, not what it did while busy."""
    jax.block_until_ready(fn(*args))
    walls = []
    for _ in range(repeats):
        w0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - w0)
    return 1e3 * min(walls)


def time_fn(fn: Any, *args: Any, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of a jitted call, after two warm-up calls (as ``time_update``)."""
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def machine_rates(kernels: list, repeats: int) -> tuple[float, float, tuple[float, float]]:
    """(copy bandwidth in bytes/ms, float32 matmul FLOPs/ms, bare Newton-Schulz (wall, CPU) ms on ``kernels``).

    Best of several calls each; the copy streams 8 buffers of 4 MB (the size of the model's
    kernels) through one elementwise op each, as an optimizer's update does.
    """
    from evolopt.architectures import celo2 as C

    big = [jnp.ones((2**20,), jnp.float32) for _ in range(8)]  # 32 MB in 8 buffers, beyond the caches
    copy = jax.jit(lambda xs: [x * 1.0001 for x in xs])
    copy_ms = _best_ms(copy, big, repeats=2 * repeats + 3)
    bandwidth = 2 * sum(x.nbytes for x in big) / copy_ms  # read + write
    mm = jax.jit(lambda xs: [x @ x for x in xs])
    mm_ms = _best_ms(mm, kernels, repeats=repeats)
    rate = sum(2 * k.shape[0] * k.shape[1] * k.shape[1] for k in kernels) / mm_ms
    ns_ms = time_fn(jax.jit(lambda xs: [C.newton_schulz(x) for x in xs]), kernels, repeats=repeats)
    return bandwidth, rate, ns_ms


def ns_flops(shape: tuple[int, ...], steps: int = 5) -> float:
    """FLOPs of ``steps`` quintic NS iterations on an m x n matrix (m <= n): X X^T, A A, (bA + cA^2) X."""
    m, n = sorted(shape[-2:])
    return steps * (4 * m * m * n + 2 * m**3)


def mlp_macs(theta: Any) -> int:
    """Multiply-adds per element of a per-element MLP: the sizes of its weight matrices."""
    if not isinstance(theta, dict):
        return 0
    for key in ("mlp", "ff_mod_stack"):
        if key in theta:
            return sum(int(np.size(w)) for w in jax.tree.leaves(theta[key]) if np.ndim(w) == 2)
    return 0


def floor_ms(name: str, tx: Any, theta: Any, params: Any, bandwidth: float, rate: float) -> float:
    """Bytes moved at copy bandwidth + FLOPs at the matmul rate, for one update of ``tx``."""
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(tx.init(params)))
    leaves = jax.tree.leaves(params)
    n = sum(x.size for x in leaves)
    reads_params = name != "adam"
    moved = 4 * n * (2 + reads_params) + 2 * state_bytes  # grads in, update out, [params in], state in + out
    orthogonalises = name in ("celo2", "celo2_ns_input")  # Newton-Schulz of each matrix (output / momentum input)
    learned = [x for x in leaves if x.ndim >= 2] if orthogonalises else leaves  # their 1-D leaves get Adam
    flops = 2 * mlp_macs(theta) * sum(x.size for x in learned)
    if orthogonalises:
        flops += sum(ns_flops(x.shape) for x in learned)
    return moved / bandwidth + flops / rate


def check_targets(ms: dict[str, float], ns: float, what: str) -> None:
    """The issue-16 targets, as ratios of times measured in this run."""
    targets = [
        ("celo2 <= 1.2x bare NS", "celo2", ns, 1.2),
        ("celo2_base <= 6x optax.adam", "celo2_base", ms.get("adam"), 6.0),
        ("small_fc_lopt <= 6x optax.adam", "small_fc_lopt", ms.get("adam"), 6.0),
        ("mulo <= 1.3x small_fc_lopt", "mulo", ms.get("small_fc_lopt"), 1.3),
        ("celo <= 2x small_fc_lopt", "celo", ms.get("small_fc_lopt"), 2.0),
    ]
    print(f"targets (ratios of {what} times in this run)")
    for label, name, ref, limit in targets:
        if name in ms and ref:
            ratio = ms[name] / ref
            print(f"  {label:32s} {ratio:6.2f}  {'met' if ratio <= limit else 'missed'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--archs", help="comma-separated subset of the registered architectures")
    ap.add_argument("--breakdown", action="store_true", help="also split celo2's step into its parts")
    args = ap.parse_args()

    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    params, grads = make_model(args.layers, args.width)
    n = sum(x.size for x in jax.tree.leaves(params))
    kernels = [layer["kernel"] for layer in params.values()]
    bandwidth, rate, ns = machine_rates(kernels, args.repeats)
    print(
        f"model: {args.layers} x dense {args.width}x{args.width} + biases = {n:,} params; "
        f"backend {jax.default_backend()}, {jax.device_count()} device(s)\n"
        f"machine: copy {bandwidth / 1e6:.1f} GB/s, float32 matmul {rate / 1e6:.1f} GFLOP/s, "
        f"bare Newton-Schulz (5 steps, {len(kernels)} matrices) {ns[0]:.1f} ms wall, {ns[1]:.1f} ms CPU"
    )
    print(f"{'arch':16s} {'wall ms':>9s} {'x adam':>8s} {'floor ms':>9s} {'x floor':>8s} {'cpu ms':>9s} {'x adam':>8s}")
    ms: dict[str, float] = {}
    cpu: dict[str, float] = {}
    adam_tx = optax.adam(1e-3)
    adam = time_update(adam_tx, params, grads, args.repeats)
    ms["adam"], cpu["adam"] = adam
    row("optax.adam", *adam, adam, floor_ms("adam", adam_tx, None, params, bandwidth, rate))
    names = args.archs.split(",") if args.archs else ARCHITECTURES.names()
    for name in names:
        arch = ARCHITECTURES.build(name)
        theta = arch.init_theta(jax.random.PRNGKey(0))
        tx = arch.optimizer(theta)
        result = time_update(tx, params, grads, args.repeats)
        ms[name], cpu[name] = result
        row(name, *result, adam, floor_ms(name, tx, theta, params, bandwidth, rate))
    if "celo2" in ms:
        print(f"celo2 / bare NS: {ms['celo2'] / ns[0]:.2f} wall, {cpu['celo2'] / ns[1]:.2f} CPU")
    check_targets(ms, ns[0], "wall")
    check_targets(cpu, ns[1], "CPU")
    if args.breakdown and "celo2" in ARCHITECTURES:
        celo2_breakdown(params, grads, args.repeats, adam)


if __name__ == "__main__":
    main()

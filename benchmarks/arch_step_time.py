"""Time one jitted optimizer update of every registered architecture against optax.adam and its floor.

Model: 8 dense 512x512 layers with biases (2.1M parameters). For each optimizer we
jit ``update(grads, state, params)``, warm up, and report the median wall time of
``--repeats`` calls (``block_until_ready``), plus the process CPU time per call,
which is less sensitive to other jobs on a shared machine.

Each rule's floor, from machine rates measured in the same run: the bytes one update must move
(params and grads read, its state read and written, the update written) at the rate this machine
streams an optimizer-shaped update (three arrays read and three written per element, over the
model's own tensors, so the same working set and caches as the updates timed; XLA compiles it as it
compiles optax.adam's update, one loop per new array, so both move 1.5x the six arrays counted: the
rate is per byte counted, as adam achieves it), plus the FLOPs
it must do at the rate of the unit that does them (``mlp_macs``: per element, the full-size
channels times the first layer's width, the hidden layers and the heads the rule reads; the
Adafactor row/column channels mix on their small vectors): a wide MLP runs block by block as matmuls
(``fused.wide_heads``) at the measured float32 matmul rate, a narrow per-element MLP at the
measured elementwise multiply-add rate (a 4-unit ReLU MLP per element, as its hidden
units are); a rule that orthogonalises adds bare Newton-Schulz's measured time on the same
matrices. Printed as ``x floor``. Every ratio to another update (``x adam``, the targets) is
of two updates timed in turn in one loop (``interleaved``), so a shared machine's drift hits
both alike. Each target (wall time) also shows the same ratio of the two updates' floors; above the
target's limit it is out of reach at these floors (met only by the rule beating its floor or the
reference running above its own).

``--loop K`` times the updates as a training loop runs them: each call runs K updates in one
jitted ``lax.scan``, each applied to the params and each from the grads scaled by its own factor
(so nothing is hoisted out of the loop), and every time printed is per update. Each call continues
from the state and params the last one returned, donated to it as a training loop's step takes them
(``continuing``; until session 32 every call started from the same buffers, and XLA copied them into
the loop first: 0.2-0.4 ms of optax.adam's 1.3-1.8 ms per update, 0.6-0.75 of small_fc_lopt's 8-9 on Zen 4).

A single call also pays for page faults on its output and temporary buffers (``faults``: minor page
faults per update, median), which glibc's handing freed memory back to the kernel makes a large share
of a cheap update and of the stream that sets the byte floors. So on Linux glibc keeps that memory,
and maps the blocks over 32 MB it cannot keep on huge pages, the process started again with its
``hugetlb`` tunable (``host_memory.py`` says why and what it measured); ``--no-hold-freed-memory``
times with glibc's defaults.

``--cpu-reassociate`` compiles everything (updates and the rate probes) with
``evolopt.xla_cpu.REASSOCIATE`` (float sums vectorised, multiply-adds fused), as meta-training
does on CPU, and also times each rule under XLA's defaults in the same loop; ``--vector-width
512`` has XLA CPU prefer 512-bit vectors (meta-training's ``cpu_vector_width``) and also times
each rule at XLA's own width (256) in the same loop.

    python benchmarks/arch_step_time.py [--repeats 5] [--layers 8] [--width 512] [--archs celo2,mulo]
    python benchmarks/arch_step_time.py --cpu-reassociate [--loop 8] [--vector-width 512] [--no-hold-freed-memory]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import host_memory  # benchmarks/ is on the path when run as a script
import jax
import jax.numpy as jnp
import optax
from host_memory import minor_faults
from rule_costs import best_ms, elementwise_rate, mlp_macs

from evolopt import xla_cpu

OPTIONS: tuple[bool, int | None] = (False, None)  # every jit below: (--cpu-reassociate, --vector-width)
LOOP = 1  # --loop K: each timed call runs K updates (or K Newton-Schulz) in one scan; times are per update


def jit(fn: Callable[..., Any], options: tuple[bool, int | None] | None = None, **kwargs: Any) -> Any:
    """``jax.jit`` under this run's compile options (``options``: (reassociate, vector width) instead);
    ``kwargs`` go to ``jax.jit``."""
    return xla_cpu.jit(fn, *(options or OPTIONS), **kwargs)


def other_options() -> dict[str, tuple[bool, int | None]]:
    """The compile options each rule is also timed under, in the same loop: XLA's defaults when this
    run reassociates, XLA's own vector width when it sets one."""
    reassociate, width = OPTIONS
    others = {"XLA defaults": (False, None)} if reassociate else {}
    return {**others, **({"XLA's width": (reassociate, None)} if width else {})}


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


def named_transform(name: str) -> optax.GradientTransformation:
    """``optax.adam(1e-3)`` for ``"adam"``, else the registered arch ``name`` at its initial theta (key 0), as
    this benchmark times each rule (``kernel_profile.py --update`` and ``ab_revisions.py --update`` take it)."""
    if name == "adam":
        return optax.adam(1e-3)
    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    arch = ARCHITECTURES.build(name)
    return arch.optimizer(arch.init_theta(jax.random.PRNGKey(0)))


def loop_scales(loop: int | None = None) -> jax.Array:
    """``--loop K``'s per-step factors ``1 + k / K`` (``loop``: K, default this run's): the k-th update's grads
    (or Newton-Schulz's input) are scaled by them, so no step's work is loop-invariant and none is hoisted."""
    loop = loop or LOOP
    return 1.0 + jnp.arange(loop) / loop


def per_call(call: Callable[[], Any], updates: int) -> Callable[[], Any]:
    """``call``, marked as running ``updates`` updates (``interleaved`` reports its time per update)."""
    call.updates = updates  # type: ignore[attr-defined]
    return call


def update_function(tx: optax.GradientTransformation, loop: int) -> Callable[[Any, Any, Any], Any]:
    """``f(grads, state, params)``: one ``tx.update`` (``loop`` 1), or ``loop`` updates in one ``lax.scan``,
    each applied to the params, the k-th from the grads times ``1 + k / loop`` (so no work is
    loop-invariant), as a training loop runs them; unjitted (``kernel_profile.py --update`` compiles it too)."""
    kwargs = {"loss": jnp.float32(1.0), "num_steps": 1000}
    if not isinstance(tx, optax.GradientTransformationExtraArgs):
        kwargs = {}

    def update(g: Any, s: Any, p: Any) -> Any:
        return tx.update(g, s, p, **kwargs)

    def train(g: Any, s: Any, p: Any) -> Any:
        def step(carry: Any, scale: jax.Array) -> Any:
            s, p = carry
            u, s = update(jax.tree.map(lambda x: scale * x, g), s, p)
            return (s, optax.apply_updates(p, u)), None

        return jax.lax.scan(step, (s, p), loop_scales(loop))[0]

    return update if loop == 1 else train


def update_call(
    tx: optax.GradientTransformation, params: Any, grads: Any, options: tuple[bool, int | None] | None = None
) -> Callable[[], Any]:
    """A no-argument call of ``update_function(tx, LOOP)`` jitted from ``tx.init(params)`` (``jit``'s
    options): one update, or with ``--loop K`` K updates per call, continuing (``timed_update``)."""
    call = timed_update(tx, params, grads, LOOP, lambda fn, **kwargs: jit(fn, options, **kwargs))[1]
    return per_call(call, LOOP)


def timed_update(
    tx: optax.GradientTransformation, params: Any, grads: Any, loop: int, jit_fn: Callable[..., Any]
) -> tuple[Any, Callable[[], Any]]:
    """``(jitted, call)``: ``update_function(tx, loop)`` jitted by ``jit_fn(fn, **jax_jit_kwargs)`` and a
    no-argument call of it from ``tx.init(params)``; in a loop (``loop`` > 1) the state and params are
    donated and each call continues from the last (``continuing``). ``update_call`` and
    ``kernel_profile.py --update`` both time the update this way."""
    state = tx.init(params)
    if loop == 1:
        jitted = jit_fn(update_function(tx, 1))
        return jitted, lambda: jitted(grads, state, params)
    jitted = jit_fn(update_function(tx, loop), donate_argnums=(1, 2))
    return jitted, continuing(jitted, grads, state, params)


def continuing(looped: Callable[[Any, Any, Any], Any], grads: Any, state: Any, params: Any) -> Callable[[], Any]:
    """A no-argument call of ``looped(grads, state, params) -> (state, params)`` (jitted, donating its state and
    params) that starts from copies of ``state`` and ``params`` and then from what the last call returned, as a
    training loop's step takes its state. Given the same buffers at every call instead, XLA must copy the state
    and params into the loop's carry first (a copy kernel per array per call: 73 per call of small_fc_lopt's 8
    updates, 0.6-0.75 ms per update on this benchmark's 2.1M params) which no training loop that donates pays."""
    carry = list(jax.tree.map(jnp.copy, (state, params)))  # its own buffers: the caller's are shared by every rule

    def call() -> tuple[Any, Any]:
        carry[:] = looped(grads, *carry)
        return tuple(carry)

    return call


def interleaved(
    calls: dict[str, Callable[[], Any]], repeats: int, faults: dict[str, float] | None = None
) -> dict[str, tuple[float, float]]:
    """(median wall ms, median CPU ms) of each call, timed in turn (a, b, a, b, ...) after two warm-up
    calls each, so that a shared machine's drift hits every call of a ratio alike; a round of a few
    milliseconds is repeated more often (>= 1 s in all, at most 200 rounds), so its medians are as
    steady as a slow one's. A call marked by ``per_call`` is timed per update. ``faults``, when
    given, receives each call's median minor page faults per update."""
    w0 = time.perf_counter()
    for call in calls.values():
        for _ in range(2):
            jax.block_until_ready(call())
    rounds = max(repeats, min(200, int(2.0 / max(time.perf_counter() - w0, 1e-6))))
    walls: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    paged: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            f0 = minor_faults()  # read outside the timed span (a syscall)
            w0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(call())
            w1, c1 = time.perf_counter(), time.process_time()
            updates = getattr(call, "updates", 1)
            walls[name].append((w1 - w0) / updates)
            cpus[name].append((c1 - c0) / updates)
            paged[name].append((minor_faults() - f0) / updates)
    if faults is not None:
        faults.update({name: statistics.median(paged[name]) for name in calls})
    return {name: (1e3 * statistics.median(walls[name]), 1e3 * statistics.median(cpus[name])) for name in calls}


def time_update(tx: optax.GradientTransformation, params: Any, grads: Any, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of one jitted update (``interleaved``, alone)."""
    return interleaved({"tx": update_call(tx, params, grads)}, repeats)["tx"]


def row(
    name: str,
    wall: float,
    cpu: float,
    adam: tuple[float, float],
    floor: float | None = None,
    faults: float | None = None,
) -> None:
    fl = f"{floor:9.1f} {wall / floor:7.1f}x" if floor else f"{'':9s} {'':8s}"
    paged = f" {faults:7.0f}" if faults is not None else ""
    print(f"{name:16s} {wall:9.1f} {wall / adam[0]:7.1f}x {fl} {cpu:9.1f} {cpu / adam[1]:7.1f}x{paged}", flush=True)


def newton_schulz_call(kernels: list) -> Callable[[], Any]:
    """A no-argument call of bare Newton-Schulz (celo2's, 5 steps) on each of ``kernels``, jitted
    once; with ``--loop K``, K of them in one scan, on the kernels scaled as ``update_call``'s grads."""
    from evolopt.architectures import celo2 as C

    def orthogonalise(xs: list) -> list:
        return [C.newton_schulz(x) for x in xs]

    def loop(xs: list) -> list:
        def step(total: list, scale: jax.Array) -> Any:
            return [t + o for t, o in zip(total, orthogonalise([scale * x for x in xs]))], None

        return jax.lax.scan(step, [jnp.zeros_like(x) for x in xs], loop_scales())[0]

    ns = jit(orthogonalise if LOOP == 1 else loop)
    return per_call(lambda: ns(kernels), LOOP)


def celo2_breakdown(
    params: Any, grads: Any, repeats: int, adam: tuple[float, float], ns_call: Callable[[], Any]
) -> None:
    """Split celo2's step into features+MLP, Newton-Schulz and the rest, by variants."""
    from evolopt.architectures import celo2 as C

    theta = C.init_theta(jax.random.PRNGKey(0))
    full = time_update(C.celo2(theta), params, grads, repeats)
    no_ns = time_update(C.celo2(theta, orthogonalize=False), params, grads, repeats)
    real_direction = C._direction
    # "rest": accumulators, output RMS normalisation, Adam on biases, routing.
    C._direction = lambda mlp, p, g, acc, exp_mult, *extra: g * acc["m"][0]
    try:
        rest = time_update(C.celo2(theta, orthogonalize=False), params, grads, repeats)
    finally:
        C._direction = real_direction
    ns_alone = interleaved({"ns": ns_call}, repeats)["ns"]
    print("\ncelo2 breakdown (by timing variants)")
    row("celo2 (full)", *full, adam)
    row("  features + MLP", no_ns[0] - rest[0], no_ns[1] - rest[1], adam)
    row("  Newton-Schulz (full-no_ns)", full[0] - no_ns[0], full[1] - no_ns[1], adam)
    row("  Newton-Schulz (alone)", *ns_alone, adam)
    row("  rest (acc, norm, adam)", *rest, adam)


def adam_shaped(g: list, m: list, v: list) -> tuple[list, list, list]:
    """An optimizer-shaped update of the lists ``g``, ``m``, ``v``: new ``m``, ``v`` (moving averages of
    g and g^2) and ``u = m rsqrt(v)``, as optax.adam's update moves them (no bias correction)."""
    m2 = [0.9 * a + 0.1 * x for a, x in zip(m, g)]
    v2 = [0.99 * b + 0.01 * x * x for b, x in zip(v, g)]
    return m2, v2, [a * jax.lax.rsqrt(b + 1e-8) for a, b in zip(m2, v2)]


def machine_rates(kernels: list, ns_call: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """This machine's rates, best of several calls each (what it can do, not what it did while busy).

    Returns ``bandwidth`` (bytes/ms) of an optimizer-shaped stream over ``kernels`` (``adam_shaped``:
    read g, m, v; write m, v, u, compiled as optax.adam's update is; with ``--loop K`` per step of K
    in one scan, the update applied to the params, as ``update_call``'s loop), ``matmul`` (float32 FLOPs/ms
    of ``x @ x`` on ``kernels``), ``elementwise`` (FLOPs/ms of ``EW_LAYERS`` 4x4 dense + ReLU
    layers per element, as a narrow per-element MLP's hidden units run; the ReLUs keep a
    reassociating compiler from folding the layers into one) and ``ns`` (``ns_call``, bare
    Newton-Schulz on ``kernels``: (wall, CPU) ms).
    """
    g = [0.01 * k for k in kernels]
    m, v = [0.5 * x for x in g], [x * x for x in g]

    # --loop: as update_call's loop, continuing, the update applied to p (read g, m, v, p; write m, v, p)
    def stream_loop(g, mv, p):
        def step(carry, scale):
            (m, v), p = carry
            m, v, u = adam_shaped([scale * x for x in g], m, v)
            return ((m, v), [a - b for a, b in zip(p, u)]), None

        return jax.lax.scan(step, (mv, p), loop_scales())[0]

    if LOOP == 1:
        stream_ms = best_ms(jit(adam_shaped), g, m, v, repeats=4 * repeats + 10)
    else:
        stream = continuing(jit(stream_loop, donate_argnums=(1, 2)), g, (m, v), kernels)
        stream_ms = best_ms(stream, repeats=4 * repeats + 10) / LOOP
    bandwidth = (6 if LOOP == 1 else 7) * sum(x.nbytes for x in kernels) / stream_ms
    mm_ms = best_ms(jit(lambda xs: [x @ x for x in xs]), kernels, repeats=4 * repeats + 10)
    matmul = sum(2 * k.shape[0] * k.shape[1] * k.shape[1] for k in kernels) / mm_ms
    elementwise = elementwise_rate(kernels, jit, repeats=4 * repeats + 10)
    ns = interleaved({"ns": ns_call}, repeats)["ns"]
    return {"bandwidth": bandwidth, "matmul": matmul, "elementwise": elementwise, "ns": ns}


def floor_ms(name: str, tx: Any, theta: Any, params: Any, rates: dict[str, Any], hparams: dict | None = None) -> float:
    """Bytes moved at the streaming rate + MLP FLOPs at the rate of the unit doing them (+ bare
    Newton-Schulz's measured time for the rules that orthogonalise), for one update of ``tx``."""
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(tx.init(params)))
    leaves = jax.tree.leaves(params)
    n = sum(x.size for x in leaves)
    reads_params = name != "adam" or LOOP > 1  # in a loop every rule reads the params (to apply the update)
    moved = 4 * n * (2 + reads_params) + 2 * state_bytes  # grads in, update (loop: params) out, [params in], state
    orthogonalises = name in ("celo2", "celo2_ns_input")  # Newton-Schulz of each matrix (output / momentum input)
    learned = [x for x in leaves if x.ndim >= 2] if orthogonalises else leaves  # their 1-D leaves get Adam
    macs, as_matmuls = mlp_macs(name, theta, hparams or {})
    mlp_flops = 2 * macs * sum(x.size for x in learned)
    ns = rates["ns"][0] if orthogonalises else 0.0  # bare Newton-Schulz on the same matrices, timed
    mlp_rate = rates["matmul"] if as_matmuls else rates["elementwise"]
    return moved / rates["bandwidth"] + ns + mlp_flops / mlp_rate


def mulo_at_width(params: Any, grads: Any, small_fc_lopt: Callable[[], Any], repeats: int) -> None:
    """μLO at small_fc_lopt's width (``hidden_size=4``) against small_fc_lopt, in turn: what the μP
    per-tensor multipliers cost, apart from the published 32-wide MLP's 18x multiply-adds per element."""
    from evolopt.registry import ARCHITECTURES

    arch = ARCHITECTURES.build("mulo", hidden_size=4)
    narrow = update_call(arch.optimizer(arch.init_theta(jax.random.PRNGKey(0))), params, grads)
    pair = interleaved({"mulo4": narrow, "small_fc_lopt": small_fc_lopt}, repeats)
    wall, cpu = (pair["mulo4"][i] / pair["small_fc_lopt"][i] for i in (0, 1))
    print(f"mulo hidden_size=4 / small_fc_lopt (the μP scalars alone): {wall:.2f} wall, {cpu:.2f} CPU")


TARGETS = [  # issue 16: (label, arch, reference, limit)
    ("celo2 <= 1.2x bare NS", "celo2", "ns", 1.2),
    ("celo2_base <= 6x optax.adam", "celo2_base", "adam", 6.0),
    ("small_fc_lopt <= 6x optax.adam", "small_fc_lopt", "adam", 6.0),
    ("mulo <= 1.3x small_fc_lopt", "mulo", "small_fc_lopt", 1.3),
    ("celo <= 2x small_fc_lopt", "celo", "small_fc_lopt", 2.0),
]


def check_targets(
    timed: dict[str, dict[str, tuple[float, float]]], index: int, what: str, floors: dict[str, float] | None = None
) -> None:
    """The issue-16 targets, each a ratio of two updates timed in turn (``interleaved``) in this run.

    With ``floors`` (each update's floor in wall ms; bare Newton-Schulz's is its own measured time), a
    target also shows the same ratio of the two floors, and is marked out of reach at these floors
    when that exceeds its limit: meeting it would take the rule below its floor or the reference above
    its own (a cheap, memory-bound reference such as optax.adam can beat its floor from the cache).
    """
    print(f"targets (ratios of {what} times, each pair timed in turn)")
    for label, name, ref, limit in TARGETS:
        if name in timed and ref in timed[name]:
            ratio = timed[name][name][index] / timed[name][ref][index]
            line = f"  {label:32s} {ratio:6.2f}  {'met' if ratio <= limit else 'missed':6s}"
            if floors and name in floors and ref in floors:
                at_floors = floors[name] / floors[ref]
                line += f"  at floors {at_floors:5.2f}{'  (out of reach at these floors)' if at_floors > limit else ''}"
            print(line.rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--archs", help="comma-separated subset of the registered architectures")
    ap.add_argument("--breakdown", action="store_true", help="also split celo2's step into its parts")
    ap.add_argument("--cpu-reassociate", action="store_true", help="compile with evolopt.xla_cpu.REASSOCIATE")
    ap.add_argument("--vector-width", type=int, choices=xla_cpu.VECTOR_WIDTHS, help="bits XLA CPU should prefer")
    ap.add_argument("--loop", type=int, default=1, metavar="K", help="time K updates per call in one scan")
    host_memory.add_option(ap, "call")
    args = ap.parse_args()
    if args.loop < 1:
        ap.error(f"--loop {args.loop}: must be a whole number of updates, 1 or more")
    held = host_memory.hold_or_exit(ap, args.hold_freed_memory)  # before jax's first computation
    global OPTIONS, LOOP
    OPTIONS, LOOP = (args.cpu_reassociate, args.vector_width), args.loop

    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    params, grads = make_model(args.layers, args.width)
    n = sum(x.size for x in jax.tree.leaves(params))
    kernels = [layer["kernel"] for layer in params.values()]
    calls = {"ns": newton_schulz_call(kernels)}
    rates = machine_rates(kernels, calls["ns"], args.repeats)
    ns = rates["ns"]
    print(
        f"model: {args.layers} x dense {args.width}x{args.width} + biases = {n:,} params; "
        f"backend {jax.default_backend()}, {jax.device_count()} device(s); compile options "
        f"{xla_cpu.compiler_options(OPTIONS[0], vector_width=OPTIONS[1]) or 'XLA defaults'}; "
        f"{f'{LOOP} updates per call in one scan, applied (times per update)' if LOOP > 1 else 'one update per call'}"
        f"; {held}\n"
        f"machine: optimizer-shaped stream {rates['bandwidth'] / 1e6:.1f} GB/s, float32 matmul "
        f"{rates['matmul'] / 1e6:.1f} GFLOP/s, elementwise multiply-add {rates['elementwise'] / 1e6:.1f} GFLOP/s, "
        f"bare Newton-Schulz (5 steps, {len(kernels)} matrices) {ns[0]:.1f} ms wall, {ns[1]:.1f} ms CPU"
    )
    header = ("wall ms", "x adam", "floor ms", "x floor", "cpu ms", "x adam", "faults")
    print(f"{'arch':16s} " + " ".join(f"{h:>{8 + (h.endswith('ms'))}s}" for h in header))
    adam_tx = optax.adam(1e-3)
    calls["adam"] = update_call(adam_tx, params, grads)
    faults: dict[str, float] = {}  # minor page faults per update, of each update's latest timing
    adam = interleaved({"adam": calls["adam"]}, args.repeats, faults)["adam"]
    floors = {"adam": floor_ms("adam", adam_tx, None, params, rates), "ns": ns[0]}
    row("optax.adam", *adam, adam, floors["adam"], faults["adam"])
    names = args.archs.split(",") if args.archs else ARCHITECTURES.names()
    names = sorted(names, key=lambda name: name != "small_fc_lopt")
    timed: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:  # small_fc_lopt first: it is mulo's and celo's reference
        arch = ARCHITECTURES.build(name)
        theta = arch.init_theta(jax.random.PRNGKey(0))
        tx = arch.optimizer(theta)
        calls[name] = update_call(tx, params, grads)
        refs = ["adam"] + [ref for _, arch_name, ref, _ in TARGETS if arch_name == name and ref in calls]
        for label, options in other_options().items():  # the same rule compiled otherwise, in the same loop
            calls[f"{name} {label}"] = update_call(tx, params, grads, options)
            refs.append(f"{name} {label}")
        pair = {name: calls[name], **{ref: calls[ref] for ref in dict.fromkeys(refs)}}
        timed[name] = interleaved(pair, args.repeats, faults)
        floors[name] = floor_ms(name, tx, theta, params, rates, arch.hparams)
        row(name, *timed[name][name], timed[name]["adam"], floors[name], faults[name])
        for label in other_options():
            other = timed[name][f"{name} {label}"]
            print(f"{'  ' + label:16s} {other[0]:9.1f}  ({other[0] / timed[name][name][0]:.2f}x the time)")
    if "celo2" in timed:
        pair = timed["celo2"]
        print(
            f"celo2 / bare NS: {pair['celo2'][0] / pair['ns'][0]:.2f} wall, {pair['celo2'][1] / pair['ns'][1]:.2f} CPU"
        )
    if "mulo" in timed and "small_fc_lopt" in calls:
        mulo_at_width(params, grads, calls["small_fc_lopt"], args.repeats)
    check_targets(timed, 0, "wall", floors)
    if jax.default_backend() == "cpu":  # elsewhere the host only waits for the device
        check_targets(timed, 1, "CPU")
    if args.breakdown and "celo2" in ARCHITECTURES:
        celo2_breakdown(params, grads, args.repeats, adam, calls["ns"])


if __name__ == "__main__":
    main()

"""Where a meta-training generation's (or one optimizer update's) time goes, kernel by kernel (XLA CPU).

    python benchmarks/kernel_profile.py --arch celo2_base [--task image_mlp] [--population 32] [--top 25]
    python benchmarks/kernel_profile.py --update --arch small_fc_lopt [--loop 8]   # arch_step_time.py's update

Compiles the generation step as meta-training does (``xla_cpu.jit`` with ``member_steps.jit_step``'s options, so
jax's random hash inline too: ``evolopt.threefry_cpu``) plus XLA CPU's
``xla_cpu_enable_xprof_traceme``, so that the thunk runtime traces every kernel it runs; profiles
``--generations`` generations with ``jax.profiler`` (a Perfetto trace, read back here) and prints the
kernels that took the most time per generation: how often each ran, its output shape, its most frequent
HLO ops and the jax operation it came from. ``member_steps.py --breakdown`` says which component is
slow; this says which kernel. A rule's per-element MLP is a fused loop with hundreds of multiplies; one
that shows up twice per tensor is computed twice (in meta-training XLA CPU recomputes the MLP in the
consumer of its output normalisation; README, "The fitness loop's features + MLP against a floor").
Control-flow thunks (``while``, ``conditional``, ``call``) are left out: the kernels inside them are
counted on their own. Kernels may run two at a time, so their sum may exceed the generation's wall time;
the last lines say how busy each thread that ran kernels was over the traced span, and how many kernels
were launched (a per-tensor rule's small reductions add up to hundreds per update).

``--update`` profiles ``arch_step_time.py``'s update instead (its 8 x 512x512 model, ``--cpu-reassociate
--vector-width 512``; ``--loop K`` updates per call in one scan, applied, as its loop protocol; ``--arch adam``
for optax.adam), and adds up kernels of the same kind (output shape and ops): one per parameter tensor.

``--mlp-loops`` only compiles: it prints the fused loops that hold a per-element MLP (over
``MLP_MULTIPLIES`` multiplies each) in the generation step, with ``fused.stored`` off and on, and which of
the two this backend chooses, so that one sees on any backend whether XLA computes a rule's MLP once per
tensor or once per reader (celo2_base on CPU: twice per tensor without it; README, "celo2_base's direction
stored once").
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

KERNEL = re.compile(r"^[a-z][a-z0-9_\-]*(\.\d+)?$")  # an HLO instruction's name, as the runtime traces it
CONTROL_FLOW = ("while", "conditional", "call")


def kernel_table(events: list[dict], generations: int) -> list[tuple[str, float, int]]:
    """``[(kernel, ms per generation, runs per generation)]``, slowest first, from Perfetto trace events
    (complete events ``ph: X`` with ``dur`` in microseconds) of ``generations`` generations."""
    total: collections.Counter = collections.Counter()
    runs: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not KERNEL.match(name) or name.split(".")[0] in CONTROL_FLOW:
            continue
        total[name] += event.get("dur", 0)
        runs[name] += 1
    return [(name, us / 1e3 / generations, runs[name] // generations) for name, us in total.most_common()]


TRACED = {"xla_cpu_enable_xprof_traceme": True}  # the thunk runtime traces every kernel it runs
SHAPE_WIDTH, OPS_WIDTH = 40, 48  # describe's output-shape and ops columns (kinds reads the two back)


def describe(hlo: str, name: str) -> str:
    """``name``'s output shape, its fused computation's most frequent ops and the jax op it came from,
    read from the compiled module's text ``hlo``."""
    line = next((x for x in hlo.splitlines() if re.match(rf"\s*(ROOT )?%{re.escape(name)} = ", x)), None)
    if line is None:
        return ""
    shape = line.split(" = ", 1)[1].split(" ", 1)[0]
    ops = ""
    called = re.search(r"calls=(%[\w.\-]+)", line)
    start = called and re.search(rf"(^|\n){re.escape(called.group(1))} \(", hlo)
    if start:
        body = hlo[start.end() :]
        body = body[: body.find("\n}")]
        counts = collections.Counter(re.findall(r"= \S+ ([a-z][a-z\-]*)\(", body))
        for op in ("parameter", "constant", "bitcast", "broadcast", "slice", "reshape"):  # data movement
            counts.pop(op, None)
        ops = " ".join(f"{op} {n}" for op, n in counts.most_common(4))
    source = re.search(r'op_name="([^"]+)"', line)
    return f"{shape[:SHAPE_WIDTH]:{SHAPE_WIDTH}s} {ops:{OPS_WIDTH}s} {source.group(1).split('/')[-1] if source else ''}"


def thread_use(events: list[dict]) -> tuple[float, dict[int, float]]:
    """``(span, {thread: busy})`` in microseconds: the traced span from the first kernel's start to the last
    one's end, and each thread's time inside kernels (``kernel_table``'s; control flow left out)."""
    kernels = [
        e
        for e in events
        if e.get("ph") == "X" and KERNEL.match(e.get("name", "")) and e["name"].split(".")[0] not in CONTROL_FLOW
    ]
    if not kernels:
        return 0.0, {}
    span = max(e["ts"] + e.get("dur", 0) for e in kernels) - min(e["ts"] for e in kernels)
    busy: collections.Counter = collections.Counter()
    for e in kernels:
        busy[e.get("tid", 0)] += e.get("dur", 0)
    return span, dict(busy)


def kinds(table: list[tuple[str, float, int]], hlo: str) -> list[tuple[str, float, int]]:
    """``kernel_table``'s rows added up by kind (``describe``'s output shape and ops, without the source op):
    ``[(kind, ms per unit, kernels of that kind)]``, slowest first; a per-tensor kernel counts once per tensor."""
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for name, ms, _ in table:
        columns = describe(hlo, name)[: SHAPE_WIDTH + 1 + OPS_WIDTH]  # its output and ops, not its source op
        kind = " ".join(columns.split()) or name.split(".")[0]
        total[kind] += ms
        count[kind] += 1
    return [(kind, ms, count[kind]) for kind, ms in total.most_common()]


def print_use(events: list[dict], table: list[tuple[str, float, int]], units: int, unit: str) -> None:
    """The thread-use and launch lines under a kernel table (``units`` traced ``unit``s)."""
    span, busy = thread_use(events)
    working = sorted((us for us in busy.values() if us >= 0.005 * span), reverse=True)  # not a stray copy's
    shares = " / ".join(f"{100 * us / span:.0f}%" for us in working) or "-"
    launches = sum(runs for _, _, runs in table)
    small = [(ms, runs) for _, ms, runs in table if runs and ms / runs < 0.01]
    print(
        f"traced span {span / 1e3 / units:.2f} ms per {unit}; kernels ran on {len(working)} thread(s), busy {shares} "
        f"of it; {launches} kernel launches per {unit}, {sum(r for _, r in small)} of them under 10 us "
        f"({sum(ms for ms, _ in small):.2f} ms)"
    )


MLP_MULTIPLIES = 200  # more multiplies than any other fused loop of a generation step; a narrow MLP's 263-583


def mlp_loops(hlo: str) -> list[tuple[int, str]]:
    """``[(multiplies, first parameter's shape)]`` of every fused computation in the module text ``hlo``
    with over ``MLP_MULTIPLIES`` multiplies: a per-element MLP's loop."""
    out = []
    for block in hlo.split("\n\n"):
        n = block.count(" multiply(")
        head = re.match(r"\s*%?[\w.\-]+ \(param_0[.\d]*: (\w+\[[\d,]*\])", block)
        if n > MLP_MULTIPLIES and head:
            out.append((n, head.group(1)))
    return out


def count_mlp_loops(arch: str, task: str, population: int, tasks: int, truncation: int) -> None:
    """Print the generation step's MLP loops (``mlp_loops``) with ``fused.stored`` forced off and on, and
    which of the two this backend chooses (``fused.recomputes_mlp`` of a traced theta)."""
    import jax
    import jax.numpy as jnp
    from member_steps import jit_step, make_trainer  # benchmarks/ is on the path

    from evolopt.architectures import fused

    chosen = fused.recomputes_mlp
    traced = []
    jax.jit(lambda theta: traced.append(chosen(theta)))(jnp.zeros(1))  # the generation step's theta is traced
    print(f"{arch} on {jax.default_backend()}: fused.stored {'on' if traced[0] else 'off'} (as chosen)", flush=True)
    for label, store in (("stored off", False), ("stored on", True)):
        fused.recomputes_mlp = lambda theta, store=store: store
        try:
            trainer, theta0 = make_trainer(arch, task, population, tasks, truncation)
            state = trainer.init(jax.random.key(1), theta0)
            loops = mlp_loops(jit_step(trainer).lower(state).compile().as_text())
        finally:
            fused.recomputes_mlp = chosen
        shapes = ", ".join(f"{shape} ({n})" for n, shape in loops)
        print(f"{arch} on {jax.default_backend()}, {label}: {len(loops)} MLP loops: {shapes}", flush=True)


def traced(run: Callable[[], Any], calls: int) -> list[dict]:
    """Perfetto trace events (``jax.profiler``) of ``calls`` calls of ``run`` (which blocks until done)."""
    import jax

    directory = tempfile.mkdtemp(prefix="kernel_profile_")
    try:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(calls):
                run()
        trace = json.load(gzip.open(glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)[0]))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def untraced_ms(run: Callable[[], Any], calls: int) -> float:
    """Wall ms per call of ``run``, untraced (tracing every kernel slows the work down)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t0) * 1e3 / calls


def profile(
    arch: str, task: str, population: int, tasks: int, truncation: int, generations: int
) -> tuple[list[tuple[str, float, int]], str, list[dict]]:
    """Compile, warm up, time ``generations`` generations, then trace as many; print the wall time and return
    ``(kernel_table, the compiled module's text, the trace events)``."""
    import jax
    from member_steps import make_trainer, meta_training_vector_width  # benchmarks/ is on the path

    from evolopt import xla_cpu

    trainer, theta0 = make_trainer(arch, task, population, tasks, truncation)
    state = trainer.init(jax.random.key(1), theta0)
    step = xla_cpu.jit(trainer.step, True, meta_training_vector_width(), donate_argnums=0, compiler_options=TRACED)
    hlo = step.lower(state).compile().as_text()

    def generation() -> None:
        nonlocal state
        state, metrics = step(state)
        jax.block_until_ready(metrics)

    for _ in range(2):  # compile, then one warm generation
        generation()
    wall = untraced_ms(generation, generations)
    events = traced(generation, generations)
    table = kernel_table(events, generations)
    print(
        f"arch={arch} task={task} population={population} tasks/member={tasks} truncation={truncation}: "
        f"{wall:.1f} ms per generation (untraced); the traced kernels {sum(ms for _, ms, _ in table):.1f} ms"
    )
    return table, hlo, events


def profile_update(arch: str, loop: int, layers: int, width: int, calls: int) -> tuple[list, str, list[dict]]:
    """``profile`` for ``arch_step_time.py``'s update of ``arch`` (``adam``: optax.adam) on its model, compiled
    as its ``--cpu-reassociate --vector-width 512`` runs (``--loop``: ``loop`` updates per call, applied);
    tables per update."""
    import arch_step_time  # benchmarks/ is on the path
    import host_memory
    import jax

    from evolopt import xla_cpu

    held = host_memory.hold_for_benchmark(None)[0]  # as arch_step_time.py: before jax's first computation
    params, grads = arch_step_time.make_model(layers, width)
    tx = arch_step_time.named_transform(arch)
    traced_jit = lambda fn, **kwargs: xla_cpu.jit(fn, True, 512, compiler_options=TRACED, **kwargs)  # noqa: E731
    update, run = arch_step_time.timed_update(tx, params, grads, loop, traced_jit)  # as arch_step_time.py times it
    hlo = update.lower(grads, tx.init(params), params).compile().as_text()

    def call() -> None:
        jax.block_until_ready(run())

    for _ in range(2):
        call()
    wall = untraced_ms(call, calls) / loop
    events = traced(call, calls)
    table = kernel_table(events, calls * loop)
    print(
        f"{arch}: {layers} x dense {width}x{width} + biases, {loop} update(s) per call ({held}): {wall:.2f} ms per "
        f"update (untraced); the traced kernels {sum(ms for _, ms, _ in table):.2f} ms"
    )
    return table, hlo, events


def main() -> None:
    from member_steps import add_generation_options  # benchmarks/ is on the path when this file runs as a script

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generation_options(p, "celo2_base")
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--top", type=int, default=25, help="kernels to print")
    p.add_argument("--mlp-loops", action="store_true", help="only count the MLP's fused loops, stored off / on")
    p.add_argument("--update", action="store_true", help="profile arch_step_time.py's update (--arch adam: optax's)")
    p.add_argument("--loop", type=int, default=8, metavar="K", help="--update: K updates per call in one scan")
    p.add_argument("--layers", type=int, default=8, help="--update: the model's layers")
    p.add_argument("--width", type=int, default=512, help="--update: the model's width")
    args = p.parse_args()
    if args.mlp_loops:
        return count_mlp_loops(args.arch, args.task, args.population, args.tasks, args.truncation)
    if args.update:
        if args.loop < 1:
            p.error(f"--loop {args.loop}: must be a whole number of updates, 1 or more")
        table, hlo, events = profile_update(args.arch, args.loop, args.layers, args.width, args.generations * 4)
        print(f"{'ms/update':>9} {'kernels':>7}  kind (output, ops)")
        for kind, ms, count in kinds(table, hlo)[: args.top]:
            print(f"{ms:9.3f} {count:7d}  {kind}")
        return print_use(events, table, args.generations * 4 * args.loop, "update")
    table, hlo, events = profile(args.arch, args.task, args.population, args.tasks, args.truncation, args.generations)
    print(f"{'ms/gen':>8} {'runs':>5}  {'kernel':32s} {'output':40s} {'ops (most frequent)':48s} from")
    for name, ms, runs in table[: args.top]:
        print(f"{ms:8.2f} {runs:5d}  {name[:32]:32s} {describe(hlo, name)}")
    print_use(events, table, args.generations, "generation")


if __name__ == "__main__":
    main()

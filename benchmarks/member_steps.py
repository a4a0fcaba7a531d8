"""Inner member-steps per second of the jitted generation step, measured side by side.

    python benchmarks/member_steps.py [--arch small_fc_lopt] [--task image_mlp] [--population 32]
    python benchmarks/member_steps.py --arch celo2 --populations 64,256,1024,4096   # on a GPU
    python benchmarks/member_steps.py --arch celo2 --breakdown   # where a generation's time goes
    python benchmarks/member_steps.py --arch celo2 --reassociation   # xla_cpu.REASSOCIATE vs XLA's defaults
    python benchmarks/member_steps.py --arch celo2 --vector-width   # 512-bit vs XLA's 256-bit vectors
    python benchmarks/member_steps.py --arch small_fc_lopt --short-rows   # short rows carried flat vs in shape

Prints (1) learned-optimizer members vs Adam members in the same harness, one device,
(2) the learned optimizer at 1 vs 2 forced CPU devices, and (3) at 2 processes x 1
device joined by jax.distributed (gloo collectives), each in fresh subprocesses,
since the device count is fixed when jax starts, and how many cores the 1- and 2-device
runs kept busy. A member-step is one inner training step of one member on one task.
``--breakdown`` times the generation with one component dropped at a time (the features + MLP,
replaced by ``g m``; then also Newton-Schulz; the whole optimizer, replaced by SGD) plus the
strategy's ask + tell alone, and prints each component's share; for a rule that orthogonalises, also
Newton-Schulz's share against the same batched Newton-Schulz timed alone (its floor here), and the
features + MLP share against its MLP's multiply-adds at this machine's rate for them (``loop_floors.py``).
``--populations`` instead measures how the rate grows with population size on the
default devices (e.g. a GPU), in this process. Steps compile as meta-training's do (on CPU
with ``evolopt.xla_cpu.REASSOCIATE`` and the default config's ``cpu_vector_width``, 512 bits;
before session 26 at XLA's 256); ``--reassociation`` times the learned and Adam members'
steps with and without it (both at XLA's width), in turn in one loop; ``--vector-width`` the same
with and without ``cpu_vector_width=512`` (both reassociated); ``--short-rows`` the same with the inner loop
carrying tensors with rows under 16 floats flat and in their shapes (``LearnedOptimizer.flat_short_rows``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time


def build_lopt(arch: str):
    import evolopt.architectures  # noqa: F401
    from evolopt.architectures.baselines import OPTAX_BASELINES, baseline
    from evolopt.registry import ARCHITECTURES

    return baseline(arch, 1e-3) if arch in OPTAX_BASELINES else ARCHITECTURES.build(arch)


def measure(
    arch: str, task: str, population: int, tasks: int, truncation: int, repeats: int, lopt=None, theta0=None
) -> tuple[float, float]:
    """``(member-steps/s, cores busy)`` of the jitted generation step; ``lopt``/``theta0``
    replace the registered arch (the breakdown's stand-ins)."""
    import jax

    trainer, step, state = warm_step(arch, task, population, tasks, truncation, lopt, theta0)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        state, m = step(state)
    jax.block_until_ready(m)
    wall = time.perf_counter() - t0
    # (member-steps/s, cores busy: this process's CPU time / wall time over the timed steps)
    return trainer.member_steps_per_generation * repeats / wall, (time.process_time() - c0) / wall


def warm_step(arch: str, task: str, population: int, tasks: int, truncation: int, lopt=None, theta0=None):
    """``(trainer, step, state)``: the generation step jitted as meta-training's (``jit_step``), compiled
    and run once more warm, and the state after those two generations, ready to time."""
    import jax

    trainer, theta0 = make_trainer(arch, task, population, tasks, truncation, lopt, theta0)
    state = trainer.init(jax.random.key(1), theta0)
    step = jit_step(trainer)
    for _ in range(2):  # compile, then one warm step
        state, m = step(state)
    jax.block_until_ready(m)
    return trainer, step, state


def make_trainer(arch: str, task: str, population: int, tasks: int, truncation: int, lopt=None, theta0=None):
    """``(trainer, theta0)``: open_es over ``arch``'s theta (``lopt``/``theta0`` replace it), full unrolls."""
    import jax
    import jax.numpy as jnp

    import evolopt.strategies  # noqa: F401
    import evolopt.task_families  # noqa: F401
    from evolopt.meta import MetaTrainer, population_mesh
    from evolopt.registry import STRATEGIES, TASK_FAMILIES
    from evolopt.unroll import UnrollConfig

    lopt = lopt or build_lopt(arch)
    if theta0 is None:
        theta0 = lopt.init_theta(jax.random.key(0)) or {"unused": jnp.zeros(2)}
    strategy = STRATEGIES.build("open_es", population, theta0, 100)
    cfg = UnrollConfig(truncation, truncation, truncation, False)
    return MetaTrainer(strategy, TASK_FAMILIES.build(task), lopt, cfg, tasks, population_mesh()), theta0


@functools.cache
def meta_training_vector_width() -> int | None:
    """``cpu_vector_width`` of meta-training's default config, composed as ``evolopt.train`` composes it."""
    from evolopt.config import load_config

    return load_config([]).get("cpu_vector_width")


def jit_step(trainer, reassociate: bool = True, vector_width: int | None | str = "meta-training"):
    """The generation step jitted as meta-training's (on CPU ``xla_cpu.REASSOCIATE`` and its default
    ``cpu_vector_width``), state donated."""
    from evolopt import xla_cpu

    width = meta_training_vector_width() if vector_width == "meta-training" else vector_width
    return xla_cpu.jit(trainer.step, reassociate, width, donate_argnums=0)


def compare(args: argparse.Namespace, modes: dict[str, tuple[bool, int | str | None, bool | None]]) -> None:
    """Member-steps/s of ``args.arch`` and Adam members under each of two ``modes`` (name: (reassociate,
    vector width, ``flat_short_rows`` or None for the arch's own)), the four steps timed in turn
    (a, b, c, d, a, ...) so that drift hits them alike."""
    import dataclasses

    import jax

    steps, states, walls = {}, {}, {}
    for arch in (args.arch, "adam"):
        for mode, (reassociate, width, flat) in modes.items():
            lopt = build_lopt(arch) if flat is None else dataclasses.replace(build_lopt(arch), flat_short_rows=flat)
            trainer, theta0 = make_trainer(arch, args.task, args.population, args.tasks, args.truncation, lopt)
            steps[arch, mode] = jit_step(trainer, reassociate, width)
            states[arch, mode] = trainer.init(jax.random.key(1), theta0)
            walls[arch, mode] = []
    work = trainer.member_steps_per_generation
    for i in range(2 + args.repeats):  # two warm-up rounds (compile, then one step)
        for k, step in steps.items():
            t0 = time.perf_counter()
            states[k], m = step(states[k])
            jax.block_until_ready(m)
            if i >= 2:
                walls[k].append(time.perf_counter() - t0)
    print(f"task={args.task} population={args.population} tasks/member={args.tasks} truncation={args.truncation}")
    first, second = modes
    print(f"{'members':<16}{first:>14}{second:>14}{'ratio':>8}   (member-steps/s, median)")
    for arch in (args.arch, "adam"):
        fast, slow = (work / statistics.median(walls[arch, mode]) for mode in modes)
        print(f"{arch:<16}{fast:>14.0f}{slow:>14.0f}{fast / slow:>8.2f}")


def strategy_ms(arch: str, population: int, tasks: int, repeats: int) -> float:
    """ms of the strategy's jitted ask + tell alone, on this arch's theta."""
    import jax
    import jax.numpy as jnp

    import evolopt.strategies  # noqa: F401
    from evolopt.contracts import TruncationLoss
    from evolopt.meta import strong_types
    from evolopt.registry import STRATEGIES

    theta0 = build_lopt(arch).init_theta(jax.random.key(0)) or {"unused": jnp.zeros(2)}
    strategy = STRATEGIES.build("open_es", population, theta0, 100)
    losses = jax.random.uniform(jax.random.key(2), (population, tasks))
    zero = jnp.zeros((population, tasks))
    fake = TruncationLoss(losses, zero, zero.astype(bool), zero.astype(jnp.int32))

    @jax.jit
    def ask_tell(key, state):
        population_, state = strategy.ask(key, state)
        return strong_types(strategy.tell(key, population_, fake, state)[0])

    # Strongly typed in and out, as MetaTrainer's step: evosax's init and tell give weakly typed
    # leaves, not the same ones, so the first timed call compiled again (~0.4 s, which read as a
    # 13-20% strategy share of a generation).
    state = strong_types(strategy.init(jax.random.key(1), theta0))
    keys = list(jax.random.split(jax.random.key(3), repeats + 1))  # unstacked before the clock starts
    state = jax.block_until_ready(ask_tell(keys[-1], state))
    t0 = time.perf_counter()
    for key in keys[:-1]:
        state = ask_tell(key, state)
    jax.block_until_ready(state)
    ms = 1e3 * (time.perf_counter() - t0) / repeats
    if ask_tell._cache_size() != 1:
        raise RuntimeError("the strategy's ask + tell compiled again while timed: its time would include compiling")
    return ms


def _variants(arch: str):
    """(label, lopt) stand-ins that each drop one component of ``arch``'s update."""
    import contextlib

    import optax

    from evolopt.architectures import celo, celo2, small_fc_lopt
    from evolopt.architectures.base import LearnedOptimizer

    lopt = build_lopt(arch)
    swap = {  # the function computing the per-element MLP, and a cheap stand-in for it
        "celo2": (celo2, "_direction", lambda mlp, p, g, acc, e, *ns_input: g * acc["m"][0]),
        "celo2_base": (celo2, "_direction", lambda mlp, p, g, acc, e, *ns_input: g * acc["m"][0]),
        "small_fc_lopt": (small_fc_lopt, "_mlp_output", lambda mlp, p, g, acc, t: [g, g]),
        "mulo": (small_fc_lopt, "_mlp_output", lambda mlp, p, g, acc, t: [g, g]),
        "celo": (celo, "_mlp_output", lambda mlp, p, g, acc: [g, g]),
    }

    @contextlib.contextmanager
    def no_mlp():
        module, name, fake = swap[arch]
        real = getattr(module, name)
        setattr(module, name, fake)
        try:
            yield
        finally:
            setattr(module, name, real)

    out = [("full", lopt, contextlib.nullcontext)]
    if arch == "celo2":  # the MLP dropped first: without Newton-Schulz XLA computes the MLP twice (celo2_base's)
        make = lambda th, **kw: celo2.celo2(th, orthogonalize=False, **kw)  # noqa: E731
        out.append(("no features+MLP", lopt, no_mlp))
        no_ns = LearnedOptimizer("x", lopt.init_theta, make, lopt.hparams)
        out.append(("no NS, no features+MLP", no_ns, no_mlp))
    elif arch in swap:
        out.append(("no features+MLP", lopt, no_mlp))
    sgd = LearnedOptimizer("sgd", lopt.init_theta, lambda th, **kw: optax.sgd(1e-3), {})
    out.append(("no optimizer (SGD)", sgd, contextlib.nullcontext))
    return out


def breakdown(args: argparse.Namespace) -> None:
    """Generation time with one component replaced by a no-op at a time, in this process."""
    import jax
    from loop_floors import bare_ns, mlp_floor  # benchmarks/ is on the path when this file runs as a script

    print(f"breakdown: arch={args.arch} task={args.task} population={args.population} (one process)")
    gen = {}
    for label, lopt, ctx in _variants(args.arch):
        with ctx():
            rate, _ = measure(args.arch, args.task, args.population, args.tasks, args.truncation, args.repeats, lopt)
        gen[label] = 1e3 * args.population * args.tasks * args.truncation / rate
        jax.clear_caches()
    strat = strategy_ms(args.arch, args.population, args.tasks, args.repeats)
    shares = {"strategy (ask + tell)": strat, "task forward/backward + unroll": gen["no optimizer (SGD)"] - strat}
    if "no NS, no features+MLP" in gen:
        shares["Newton-Schulz"] = gen["no features+MLP"] - gen["no NS, no features+MLP"]
        shares["features + MLP"] = gen["full"] - gen["no features+MLP"]
        shares["accumulators, norms, rest"] = gen["no NS, no features+MLP"] - gen["no optimizer (SGD)"]
    elif "no features+MLP" in gen:
        shares["features + MLP"] = gen["full"] - gen["no features+MLP"]
        shares["accumulators, norms, rest"] = gen["no features+MLP"] - gen["no optimizer (SGD)"]
    print(f"{'variant':32s}{'ms/generation':>14s}")
    for label, ms in gen.items():
        print(f"{label:32s}{ms:14.1f}")
    print(f"{'share of the full generation':32s}{'ms':>14s}{'%':>8s}")
    for label, ms in shares.items():
        print(f"{label:32s}{ms:14.1f}{100 * ms / gen['full']:7.1f}%")
    if "Newton-Schulz" in shares:  # its floor here: the same batched Newton-Schulz alone
        ms, flops = bare_ns(args.task, args.population * args.tasks, args.repeats)
        ms, flops, share = ms * args.truncation, flops * args.truncation, shares["Newton-Schulz"]
        print(
            f"Newton-Schulz: {flops / 1e9:.2f} GFLOP per generation; in the step {flops / share / 1e6:.0f} GFLOP/s, "
            f"alone on the same batched matrices {ms:.1f} ms ({flops / ms / 1e6:.0f} GFLOP/s): "
            f"{share / ms:.2f}x its bare cost"
        )
    if "features + MLP" in shares:  # its floor: the MLP's multiply-adds at this machine's rate for them
        flops, ms = mlp_floor(args.arch, args.task, args.population * args.tasks, args.repeats)
        flops, ms, share = flops * args.truncation, ms * args.truncation, shares["features + MLP"]
        print(
            f"features + MLP: {flops / 1e9:.2f} GFLOP of MLP multiply-adds per generation; in the step "
            f"{flops / share / 1e6:.0f} GFLOP/s, at this machine's rate for them on the same batched tensors "
            f"{ms:.1f} ms ({flops / ms / 1e6:.0f} GFLOP/s): {share / ms:.2f}x that floor (the channels' own "
            f"arithmetic and reductions come on top of it)"
            + (": the rule beats the probe, so it is no floor here" if share < ms else "")
        )


def _worker_cmd(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--worker",
        "--arch",
        args.arch,
        "--task",
        args.task,
        "--population",
        str(args.population),
        "--tasks",
        str(args.tasks),
        "--truncation",
        str(args.truncation),
        "--repeats",
        str(args.repeats),
    ]


def in_subprocess(devices: int, args: argparse.Namespace) -> tuple[float, float]:
    """``(member-steps/s, cores busy)`` of a fresh worker with ``devices`` forced CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run(_worker_cmd(args), env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["member_steps_per_s"], result["cores_busy"]


def in_processes(processes: int, args: argparse.Namespace) -> float:
    """The same measurement over ``processes`` jax.distributed processes of one CPU device each."""
    from evolopt.distributed import free_local_port

    port = free_local_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [
                *_worker_cmd(args),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(processes),
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"worker failed: {err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])["member_steps_per_s"]


def add_generation_options(p: argparse.ArgumentParser, arch: str) -> None:
    """The options that say which generation step to build (``make_trainer``'s); ``arch``: the default."""
    p.add_argument("--arch", default=arch)
    p.add_argument("--task", default="image_mlp")
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--truncation", type=int, default=50)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_generation_options(p, "small_fc_lopt")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--breakdown", action="store_true", help="time variants that drop one component each")
    p.add_argument("--reassociation", action="store_true", help="with vs without xla_cpu.REASSOCIATE")
    p.add_argument("--vector-width", action="store_true", help="reassociated, 512-bit vs XLA's 256-bit vectors")
    p.add_argument("--short-rows", action="store_true", help="short-row tensors carried flat vs in shape")
    p.add_argument("--populations", help="comma-separated sizes: rate vs population on the default devices")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.coordinator:  # before anything starts a JAX backend
            from evolopt import distributed

            distributed.initialize(
                {"coordinator": args.coordinator, "num_processes": args.num_processes, "process_id": args.process_id}
            )
        rate, busy = measure(args.arch, args.task, args.population, args.tasks, args.truncation, args.repeats)
        print(json.dumps({"member_steps_per_s": rate, "cores_busy": busy}))
        return
    if args.breakdown:
        breakdown(args)
        return
    if args.reassociation:
        compare(args, {"reassociate": (True, None, None), "XLA defaults": (False, None, None)})
        return
    if args.vector_width:  # both reassociated, as meta-training compiles
        compare(args, {"512-bit": (True, 512, None), "XLA's 256": (True, None, None)})
        return
    if args.short_rows:  # both as meta-training compiles
        compare(args, {"flat": (True, "meta-training", True), "in shape": (True, "meta-training", False)})
        return
    if args.populations:
        import jax

        print(
            f"task={args.task} arch={args.arch} tasks/member={args.tasks} truncation={args.truncation} "
            f"devices={jax.devices()}"
        )
        print(f"{'population':>10}{'member-steps/s':>16}{'vs smallest':>13}")
        first = None
        for n in (int(x) for x in args.populations.split(",")):
            rate, _ = measure(args.arch, args.task, n, args.tasks, args.truncation, args.repeats)
            first = first or rate
            print(f"{n:>10}{rate:>16.0f}{rate / first:>13.2f}", flush=True)
        return
    print(f"task={args.task} population={args.population} tasks/member={args.tasks} truncation={args.truncation}")
    lopt, busy_1 = in_subprocess(1, args)
    adam, _ = in_subprocess(1, argparse.Namespace(**{**vars(args), "arch": "adam"}))
    print(f"{'members':<28}{'member-steps/s':>16}{'ratio':>10}")
    print(f"{'adam (1 device)':<28}{adam:>16.0f}{1.0:>10.2f}")
    print(f"{args.arch + ' (1 device)':<28}{lopt:>16.0f}{lopt / adam:>10.2f}   (learned / adam)")
    two, busy_2 = in_subprocess(2, args)
    print(f"{args.arch + ' (2 devices)':<28}{two:>16.0f}{two / lopt:>10.2f}   (2 devices / 1 device)")
    procs = in_processes(2, args)
    print(f"{args.arch + ' (2 processes x 1)':<28}{procs:>16.0f}{procs / lopt:>10.2f}   (2 processes / 1 device)")
    # One device may already keep every core busy (XLA:CPU's intra-op threads); then a second cannot add much.
    print(
        f"cores busy (process CPU time / wall time): 1 device {busy_1:.2f}, 2 devices {busy_2:.2f} "
        f"(of {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

"""Inner member-steps per second of the jitted generation step, measured side by side.

    python benchmarks/member_steps.py [--arch small_fc_lopt] [--task image_mlp] [--population 32]
    python benchmarks/member_steps.py --arch celo2 --populations 64,256,1024,4096   # on a GPU

Prints (1) learned-optimizer members vs Adam members in the same harness, one device,
(2) the learned optimizer at 1 vs 2 forced CPU devices, and (3) at 2 processes x 1
device joined by jax.distributed (gloo collectives), each in fresh subprocesses,
since the device count is fixed when jax starts, and how many cores the 1- and 2-device
runs kept busy. A member-step is one inner training step of one member on one task.
``--populations`` instead measures how the rate grows with population size on the
default devices (e.g. a GPU), in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(arch: str, task: str, population: int, tasks: int, truncation: int, repeats: int) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    import evolopt.architectures  # noqa: F401
    import evolopt.strategies  # noqa: F401
    import evolopt.task_families  # noqa: F401
    from evolopt.architectures.baselines import OPTAX_BASELINES, baseline
    from evolopt.meta import MetaTrainer, population_mesh
    from evolopt.registry import ARCHITECTURES, STRATEGIES, TASK_FAMILIES
    from evolopt.unroll import UnrollConfig

    lopt = baseline(arch, 1e-3) if arch in OPTAX_BASELINES else ARCHITECTURES.build(arch)
    theta0 = lopt.init_theta(jax.random.key(0)) or {"unused": jnp.zeros(2)}
    strategy = STRATEGIES.build("open_es", population, theta0, 100)
    cfg = UnrollConfig(truncation, truncation, truncation, False)
    trainer = MetaTrainer(strategy, TASK_FAMILIES.build(task), lopt, cfg, tasks, population_mesh())
    state = trainer.init(jax.random.key(1), theta0)
    step = jax.jit(trainer.step, donate_argnums=0)
    for _ in range(2):  # compile, then one warm step
        state, m = step(state)
    jax.block_until_ready(m)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        state, m = step(state)
    jax.block_until_ready(m)
    wall = time.perf_counter() - t0
    # (member-steps/s, cores busy: this process's CPU time / wall time over the timed steps)
    return trainer.member_steps_per_generation * repeats / wall, (time.process_time() - c0) / wall


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="small_fc_lopt")
    p.add_argument("--task", default="image_mlp")
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--truncation", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
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

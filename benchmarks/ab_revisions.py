"""Meta-training generations (or one arch's optimizer update) at two git revisions, timed in turn in one run.

    python benchmarks/ab_revisions.py bea45b4 [.] --arch celo2 [--task image_mlp] [--repeats 10]
    python benchmarks/ab_revisions.py 132204c [.] --arch small_fc_lopt --update [--loop 8]

A change to a rule's speed is judged against the code before it, and this machine's speed drifts by
up to 2x between runs (README, "The issue-16 table on AMD Zen 4"), so timings taken one after the
other mislead. Here each revision's ``evolopt`` is checked out into a temporary git worktree
(``git worktree add --detach``; ``.``, the default second revision, is this checkout with its
uncommitted changes) and imported by its own worker process (``PYTHONPATH``; one process cannot
hold two ``evolopt`` packages); each worker compiles the generation step as meta-training does
(``member_steps.warm_step``, of *this* checkout's benchmarks), then the two are told in turn to run
one generation (a, b, a, b, ...), so that drift hits both alike. Prints each revision's median ms
per generation and member-steps/s, and the median of the paired ratios (each a against the b after
it). The revisions must share ``member_steps``'s interfaces (``MetaTrainer``, ``UnrollConfig``, the
registries), as every revision since session 20 does. Worktrees are removed at exit.

``--update`` times the optimizer update of ``arch_step_time.py`` instead (this checkout's benchmark, each
revision's rule; 8 x 512x512 + biases, compiled with ``xla_cpu.REASSOCIATE`` at 512-bit vectors as the
issue-16 table's loop protocol is; ``--loop K`` updates per call, 8 by default) and prints ms per update;
freed memory is held as there (``host_memory``), so no call faults its buffers in again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args: argparse.Namespace) -> None:
    """Compile, warm up, then run one generation per line read from stdin, printing its wall ms."""
    sys.path.insert(0, HERE)
    import jax
    import member_steps as ms

    import evolopt

    if not os.path.abspath(evolopt.__file__).startswith(os.getcwd() + os.sep):  # an editable install's finder won
        raise SystemExit(f"imported evolopt from {evolopt.__file__}, not from the worktree {os.getcwd()}")

    if args.update:
        run, work = update_call(args)
    else:
        trainer, step, state = ms.warm_step(args.arch, args.task, args.population, args.tasks, args.truncation)
        work, carry = trainer.member_steps_per_generation, [state]

        def run() -> None:
            carry[0], m = step(carry[0])
            jax.block_until_ready(m)

    print(json.dumps({"ready": True, "work": work}), flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        run()
        print(json.dumps({"ms": 1e3 * (time.perf_counter() - t0)}), flush=True)


def update_call(args: argparse.Namespace):
    """(a warmed-up call running ``args.loop`` updates of ``args.arch`` as ``arch_step_time.py --cpu-reassociate
    --vector-width 512 --loop K`` does, the updates per call)."""
    import arch_step_time as ast
    import host_memory
    import jax

    host_memory.hold_for_benchmark(None)  # before jax's first computation, as arch_step_time.py
    ast.OPTIONS, ast.LOOP = (True, 512), args.loop
    params, grads = ast.make_model(8, 512)
    call = ast.update_call(ast.named_transform(args.arch), params, grads)  # adam: a control, the same code at both
    for _ in range(3):
        jax.block_until_ready(call())
    return lambda: jax.block_until_ready(call()), args.loop


def start_worker(tree: str, args: argparse.Namespace) -> subprocess.Popen:
    """A worker importing ``tree``'s evolopt, one CPU device, talking over its stdin and stdout."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--arch", args.arch, "--task", args.task]
    cmd += ["--population", str(args.population), "--tasks", str(args.tasks), "--truncation", str(args.truncation)]
    cmd += ["--update", "--loop", str(args.loop)] if args.update else []
    env = {**os.environ, "PYTHONPATH": tree, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.Popen(cmd, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read(proc: subprocess.Popen) -> dict:
    """The worker's next JSON line; exits with a one-line error if it died."""
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"a worker exited early (code {proc.wait()}); see its error above")
    return json.loads(line)


def compare(trees: dict[str, str], args: argparse.Namespace) -> None:
    """Times ``args.repeats`` generations of each revision (``rev: tree``), in turn, and prints the table."""
    procs = {rev: start_worker(tree, args) for rev, tree in trees.items()}  # both compile at once
    try:
        work = [read(p)["work"] for p in procs.values()][0]  # member-steps per generation or updates per call
        walls: dict[str, list[float]] = {rev: [] for rev in procs}
        for _ in range(args.repeats):
            for rev, proc in procs.items():
                proc.stdin.write("\n")
                proc.stdin.flush()
                walls[rev].append(read(proc)["ms"])
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    a, b = procs
    if args.update:
        shape = f"update of 8 x 512x512 + biases, {args.loop} per call"
        print(f"arch={args.arch} {shape}; {args.repeats} calls each, in turn")
        print(f"{'revision':<14}{'ms/update':>15}")
        for rev in procs:
            print(f"{rev:<14}{statistics.median(walls[rev]) / work:>15.2f}")
    else:
        print(
            f"arch={args.arch} task={args.task} population={args.population} tasks/member={args.tasks} "
            f"truncation={args.truncation}; {args.repeats} generations each, in turn"
        )
        print(f"{'revision':<14}{'ms/generation':>15}{'member-steps/s':>16}")
        for rev in procs:
            median_ms = statistics.median(walls[rev])
            print(f"{rev:<14}{median_ms:>15.1f}{work / median_ms * 1e3:>16.0f}")
    paired = sorted(x / y for x, y in zip(walls[a], walls[b]))
    print(
        f"{a} / {b} time: {statistics.median(walls[a]) / statistics.median(walls[b]):.2f} (medians); "
        f"paired ratios {paired[0]:.2f}..{paired[-1]:.2f}, median {statistics.median(paired):.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("revisions", nargs="*", help="one or two git revisions; '.' (the default second) is this checkout")
    p.add_argument("--arch", default="celo2")
    p.add_argument("--task", default="image_mlp")
    p.add_argument("--population", type=int, default=32)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--truncation", type=int, default=50)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--update", action="store_true", help="time the arch's optimizer update (arch_step_time.py)")
    p.add_argument("--loop", type=int, default=8, metavar="K", help="with --update: updates per call, in one scan")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.loop < 1:
        p.error(f"--loop {args.loop}: must be a whole number of updates, 1 or more")
    revs = args.revisions + ["."] * (2 - len(args.revisions))
    if len(revs) != 2 or revs[0] == revs[1]:
        p.error(f"revisions={args.revisions!r}; give one or two different git revisions ('.': this checkout)")
    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        try:
            for i, rev in enumerate(revs):
                if rev == ".":  # the working tree as it is, uncommitted changes included
                    trees[rev] = root
                    continue
                tree = os.path.join(tmp, f"rev{i}")
                subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, rev], cwd=root, check=True)
                trees[rev] = tree
            compare(trees, args)
        finally:
            for tree in trees.values():
                if tree != root:
                    subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=root, check=False)


if __name__ == "__main__":
    main()

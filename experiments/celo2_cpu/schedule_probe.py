"""Probe: what limits Celo2's best learning rate, and its loss there?

Two variants of a Celo2 candidate, each tuned over the evaluation's 9-rate grid with the
same 3 seeds exactly as ``evolopt.evaluate`` tunes constant rates:

* ``cosine``: the rate decays to 0 over the task's ``T`` steps, ``lr_t = lr (1 + cos(pi t / T)) / 2``
  (Celo2's matrix step has RMS = lr whatever the gradient, so at a constant rate it cannot
  settle); Adam gets the same schedule, for a fair comparison.
* ``adam_group_fixed``: the Adam group (biases, 1-D leaves; rate ``adam_lr_mult lr = 20 lr``)
  held at 0.02, the rate it had in meta-training, while the grid moves only the learned rule's
  rate: is the Adam group what diverges at rates above 3e-3?

Prints the best rate and the smoothed final training and mean validation losses. The
constant-rate numbers are the evaluation's (``eval_seedN_tuned/lr_grid.csv``).

    nice -n 5 python experiments/celo2_cpu/schedule_probe.py experiments/celo2_cpu/runs/seed0 \
        [variants=cosine,adam_group_fixed] [suite=heldout] [tasks=digits_mlp32_8x8,...]
"""

from __future__ import annotations

import dataclasses
import sys
import time

import optax

from evolopt.architectures.baselines import baseline
from evolopt.config import import_plugins
from evolopt.eval_grid import final_scores, lr_grid, tune
from evolopt.evaluate import resolve_candidate
from evolopt.registry import TASK_FAMILIES
from evolopt.suites import get_suite

ADAM_GROUP_LR = 0.02  # 20 x 1e-3, the meta-training value


def cosine(lopt, steps: int):
    """``lopt`` whose learning_rate ``lr`` becomes the schedule ``lr (1 + cos(pi t / steps)) / 2``."""

    def make(theta, learning_rate, **kw):
        return lopt.make(theta, learning_rate=optax.cosine_decay_schedule(learning_rate, steps), **kw)

    return dataclasses.replace(lopt, make=make)


def adam_group_fixed(lopt, steps: int):
    """Celo2 ``lopt`` whose Adam group's rate ``adam_lr_mult lr`` stays ``ADAM_GROUP_LR`` for every ``lr``."""

    def make(theta, learning_rate, **kw):
        return lopt.make(theta, learning_rate=learning_rate, **{**kw, "adam_lr_mult": ADAM_GROUP_LR / learning_rate})

    return dataclasses.replace(lopt, make=make)


VARIANTS = {"cosine": cosine, "adam_group_fixed": adam_group_fixed}


def main(argv: list[str]) -> None:
    import_plugins([])
    args = dict(a.split("=", 1) for a in argv[1:])
    cand = resolve_candidate(argv[0])
    variants = args.get("variants", "cosine,adam_group_fixed").split(",")
    names = args.get("tasks", "digits_mlp32_8x8,mnist5k_mlp64x2_16x16,mnist1d_mlp64_tanh").split(",")
    tasks = [t for t in get_suite(args.get("suite", "heldout")) if t.name in names]
    lrs = lr_grid(9)
    print("| task | optimizer | variant | best lr | final train | final valid |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        family = TASK_FAMILIES.build(task.family, **task.options)
        runs = [(cand.label, cand.lopt, cand.theta, v) for v in variants]
        if "cosine" in variants:
            runs.append(("adam", baseline("adam", 1e-3), {}, "cosine"))
        for label, lopt, theta, variant in runs:
            t0 = time.perf_counter()
            best, _, _ = tune(family, VARIANTS[variant](lopt, task.steps), theta, task.steps, lrs, 3)
            train = final_scores(best.curves[None])[0]
            print(
                f"| {task.name} | {label} | {variant} | {best.lr:.0e} | {train:.4f} | {best.valid.mean():.4f} |"
                f"  <!-- {time.perf_counter() - t0:.0f} s -->",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])

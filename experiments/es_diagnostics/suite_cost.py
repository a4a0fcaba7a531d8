"""Rough evaluation time of suite tasks: an Adam grid (9 rates x 3 seeds, full steps, compile included) per
task, each timed between two timings of digits_mlp32_8x8 (heldout), so the ratio is taken under the same load.

    python experiments/es_diagnostics/suite_cost.py TASK[,TASK...]

evolopt/eval_run.py's SECONDS for a new task = (measured time of a heldout task of the same kind: MLPs and
regression digits_mlp32_8x8, convnets digits_conv, LMs lm_char_transformer) x (the task's relative time /
that task's relative time). Table in suite_floor.md.
"""

from __future__ import annotations

import sys
import time

from evolopt.architectures.baselines import baseline
from evolopt.config import load_builtins
from evolopt.eval_grid import lr_grid, train_grid
from evolopt.eval_run import SECONDS
from evolopt.registry import TASK_FAMILIES
from evolopt.suites import get_suite


def grid_seconds(task) -> float:
    family = TASK_FAMILIES.build(task.family, **task.options)
    t0 = time.perf_counter()
    train_grid(family, baseline("adam", 1e-3), {}, task.steps, lr_grid(9), 3)
    return time.perf_counter() - t0


def main(names: list[str]) -> None:
    load_builtins()
    tasks = {t.name: t for s in ("heldout", "validation", "heldout2") for t in get_suite(s)}
    ref = tasks["digits_mlp32_8x8"]
    before = grid_seconds(ref)
    for name in names:
        seconds = grid_seconds(tasks[name])
        after = grid_seconds(ref)
        rel = seconds / ((before + after) / 2)
        print(
            f"{name} {tasks[name].steps} steps: adam grid {seconds:.1f} s, ref {before:.1f}/{after:.1f} s, "
            f"relative {rel:.2f} (table: {SECONDS.get(name)})",
            flush=True,
        )
        before = after


if __name__ == "__main__":
    main(sys.argv[1].split(","))

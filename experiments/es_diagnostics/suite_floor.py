"""How low does tuned Adam push the training loss on the validation / heldout2 suites' tasks?

    python experiments/es_diagnostics/suite_floor.py [validation heldout2] [--tasks=name,name]

Adam at 3 rates (3e-3, 1e-2, 3e-2), 2 tasks each; prints, per task, the best rate's mean final
normalised training loss (smoothed over the last 10% of steps) and its final validation loss.
A task is useful for ratios between optimizers when that floor stays well above 0.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from evolopt.architectures.baselines import baseline
from evolopt.config import import_plugins
from evolopt.meta import make_evaluator
from evolopt.registry import TASK_FAMILIES
from evolopt.suites import get_suite

RATES = (3e-3, 1e-2, 3e-2)


def main(suites: list[str], only: set[str] | None = None) -> None:
    import_plugins([])
    print("| suite | task | steps | best Adam rate | final train loss (normalised) | valid loss |")
    print("|---|---|---|---|---|---|")
    for name in suites:
        for task in get_suite(name):
            if task.family.startswith("rl_") or (only and task.name not in only):
                continue
            family = TASK_FAMILIES.build(task.family, **task.options)
            best = None
            for lr in RATES:
                ev = make_evaluator(family, baseline("adam", lr), 2, task.steps)
                curves, valid = jax.device_get(ev({}, jax.random.key(0)))
                tail = float(np.mean(curves[:, -max(1, task.steps // 10) :]))
                if best is None or tail < best[1]:
                    best = (lr, tail, float(np.mean(valid)))
            print(f"| {name} | {task.name} | {task.steps} | {best[0]:g} | {best[1]:.4f} | {best[2]:.4f} |", flush=True)


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--tasks=")]
    tasks = {t for a in sys.argv[1:] if a.startswith("--tasks=") for t in a.removeprefix("--tasks=").split(",")}
    main(names or ["validation", "heldout2"], tasks or None)

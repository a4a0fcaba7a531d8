"""``evolopt-evaluate optimizer=... suite=heldout seeds=3`` (or ``python -m evolopt.evaluate``):
a candidate vs tuned baselines.

The protocol (a candidate and each baseline tuned over a learning-rate grid, per task of a
suite) is described in :mod:`evolopt.eval_task`, which implements it; the report is
:mod:`evolopt.eval_report`, the command line :mod:`evolopt.eval_cli`.
"""

from evolopt.eval_cli import main
from evolopt.eval_grid import lr_grid, smooth
from evolopt.eval_report import Result, iqm, steps_to_reach
from evolopt.eval_task import Candidate, evaluate_task, resolve_candidate

__all__ = [
    "Candidate",
    "Result",
    "evaluate_task",
    "iqm",
    "lr_grid",
    "main",
    "resolve_candidate",
    "smooth",
    "steps_to_reach",
]

if __name__ == "__main__":
    raise SystemExit(main())

"""``evolopt-evaluate optimizer=... suite=heldout seeds=3`` (or ``python -m evolopt.evaluate``):
a candidate vs tuned baselines.

Protocol. For every task of the suite, each baseline (optax adam, adamw, sgdm by default)
trains ``seeds`` runs at every rate of the grid ``lrs`` (``lr_grid``: log-spaced over
1e-4..1) and is represented by its best rate (lowest mean smoothed final training loss,
:mod:`evolopt.eval_grid`). The candidate is tuned the same way over ``candidate_lrs``
rates (default: the baselines' grid), overriding its ``learning_rate`` hyperparameter,
and is also reported at its own rate (the one stored with it); ``candidate_lrs=0`` uses
only its own rate. Every grid runs as one jitted vmap sharded over all local devices.
The report (:mod:`evolopt.eval_report`) gives per task the normalised loss (candidate /
best baseline final train loss) and speedup, and over tasks the win rate and IQM.

The per-task protocol lives in :mod:`evolopt.eval_task`, the command line in :mod:`evolopt.eval_cli`.
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

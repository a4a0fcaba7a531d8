"""``baselines_from=DIR``: the tuned baselines of an earlier evaluation, read instead of trained.

``DIR/tasks/<task>.npz`` (:mod:`evolopt.eval_store`) holds, per baseline, its whole grid
(every rate's final, mean and valid scores), its tuned rate and that rate's curves
``[seeds, steps]`` and scores. A baseline's grid is a deterministic function of the task
definition (name, family, options, steps), the seeds (their number and first one; seed ``s`` is the
same key for every optimizer), the learning-rate grid and, for the tuned rate, the tuning score; so when all of
these and the storage format match, the stored baseline is the one a fresh evaluation
computes (on the same kind of machine: XLA's numbers may differ between backends). The
candidate, its grid and the suite's name play no part. Every task is checked before any
training; the first that cannot be reused is refused in one line (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from evolopt.eval_grid import Tuned, final_scores, lr_grid, mean_scores
from evolopt.eval_report import Result
from evolopt.eval_store import read_stored, task_definition, task_path
from evolopt.registry import ConfigError, first_difference

COMPARED = ("format", "score", "seeds", "lrs", "first_seed")  # of the stored protocol; then the task definition
FIX = "drop baselines_from= to train the baselines here"


@dataclasses.dataclass
class Reused(Tuned):
    """A baseline read from an earlier evaluation: its scores are the ones stored there (computed by
    :func:`evolopt.eval_grid.run_scores` from its curves and per-seed valid losses); per-seed valid
    losses are not stored, so ``valid`` holds only their mean, ``[1]``."""

    stored: dict = dataclasses.field(default_factory=dict)

    def scores(self) -> dict[str, float]:
        return {k: self.stored[k] for k in ("final", "mean", "valid")}


def load_baselines(source: Path, suite: list, baselines: list[str], protocol: dict) -> dict[str, dict]:
    """``task -> baseline -> (Reused, grid rows)`` for every task of ``suite`` and every name of ``baselines``,
    read from ``source/tasks``; ConfigError (one line: the task, what differs here vs there, the fix) on the
    first task that cannot be reused."""
    return {t.name: _task_baselines(Path(source), t, baselines, protocol) for t in suite}


def _definition_there(stored: dict, name: str) -> Any:
    """The stored task definition; for a task stored before they were recorded, its suite's today."""
    if "task" in stored:
        return stored["task"]
    from evolopt.suites import SUITES

    match = [t for t in SUITES.get(str(stored.get("suite")), []) if t.name == name]
    return task_definition(match[0]) if match else "unknown (not recorded; its suite has no such task)"


def _task_baselines(source: Path, task: Any, baselines: list[str], protocol: dict) -> dict:
    where = f"baselines_from={source}: task '{task.name}'"
    path = task_path(source, task.name)
    if not path.is_file():
        raise ConfigError(f"{where} is not stored there ({path} is missing); evaluate it into {source} first or {FIX}")
    try:
        stored, result = read_stored(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {path} is not a readable stored task ({e}); {FIX}") from None
    here = {**{k: protocol[k] for k in COMPARED}, "task": task_definition(task)}
    there = {**{k: stored.get(k) for k in COMPARED}, "task": _definition_there(stored, task.name)}
    diff = first_difference(here, there)
    if diff is not None:
        key, mine, theirs = diff
        raise ConfigError(
            f"{where} was evaluated there under another protocol: {key}={theirs} there, {key}={mine} here; "
            + (f"use {key}={theirs} or {FIX}" if key in COMPARED[1:] else FIX)
        )
    stored_names = list(stored.get("baselines") or [])
    for name in baselines:
        if name not in stored_names:
            raise ConfigError(
                f"{where} has no baseline '{name}' there (there: {', '.join(stored_names) or 'none'}); "
                f"drop it from baselines= or {FIX}"
            )
    try:
        return {n: _reused(result, n, lr_grid(protocol["lrs"]), protocol["seeds"], task.steps) for n in baselines}
    except ValueError as e:
        raise ConfigError(f"{where}: {path} is malformed ({e}); {FIX}") from None


def _reused(result: Result, name: str, lrs: np.ndarray, seeds: int, steps: int) -> tuple[Reused, list]:
    """One baseline's tuned rate and grid rows, checked against the protocol and against its own curves."""
    rows, scores = result.grid.get(name), result.baselines.get(name)
    if rows is None or scores is None:
        raise ValueError(f"no grid or scores for baseline '{name}'")
    if [row[0] for row in rows] != lrs.tolist():
        raise ValueError(f"{name}'s learning rates {[row[0] for row in rows]} are not {lrs.tolist()}")
    curves = result.curves.get(f"{name} (lr={scores['lr']:.0e})")
    if curves is None or curves.shape != (seeds, steps):
        raise ValueError(f"no curves [{seeds}, {steps}] for {name} at its tuned rate {scores['lr']:.0e}")
    recomputed = {"final": final_scores(curves[None])[0], "mean": mean_scores(curves[None])[0]}
    if any(float(v) != scores[k] for k, v in recomputed.items()) or scores["lr"] not in lrs.tolist():
        raise ValueError(f"{name}'s stored scores do not match its curves")
    return Reused(float(scores["lr"]), curves, np.array([scores["valid"]]), dict(scores)), list(rows)

"""One task of an evaluation (:mod:`evolopt.evaluate`): a candidate vs tuned baselines.

Protocol. For every task of the suite, each baseline (optax adam, adamw, sgdm, muon by
default) trains ``seeds`` runs at every rate of the grid ``lrs`` (``lr_grid``: log-spaced
over 1e-4..1) and is represented by its best rate by the tuning score ``score``: ``mean``
(default), the mean training loss over the run, or ``final``, the smoothed final training
loss (:mod:`evolopt.eval_grid`; both means over seeds). The candidate is tuned the same way
over ``candidate_lrs`` rates (default: the baselines' grid), overriding its
``learning_rate`` hyperparameter, and is also reported at its own rate (the one stored with
it); ``candidate_lrs=0`` uses only its own rate. Every grid runs as one jitted vmap sharded
over all local devices. Each optimizer at its chosen rate carries three scores: final train,
mean train and final validation loss. The report (:mod:`evolopt.eval_report`) gives per task
the normalised loss (candidate / best baseline, on the tuning score) and speedup, and over
tasks, against each baseline and the best of them, win rates and geometric-mean ratios on
all three scores.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from evolopt.architectures.base import LearnedOptimizer, Theta
from evolopt.architectures.baselines import OPTAX_BASELINES, baseline
from evolopt.eval_grid import Tuned, grid_mesh, grid_scores, lr_grid, smooth, train_grid, tune
from evolopt.eval_report import Result, iqm, ratio, steps_to_reach
from evolopt.registry import ARCHITECTURES, TASK_FAMILIES, ConfigError

__all__ = [
    "Candidate",
    "Result",
    "evaluate_task",
    "iqm",
    "lr_grid",
    "resolve_candidate",
    "smooth",
    "steps_to_reach",
]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """The optimizer under evaluation; ``own_lr`` is its ``learning_rate`` hyperparameter (None if it has none)."""

    label: str
    lopt: LearnedOptimizer
    theta: Theta
    own_lr: float | None


def resolve_candidate(spec: str) -> Candidate:
    """A theta file, run dir or pretrained name; ``arch:name``, an architecture at one of its
    named thetas (``celo2:muon``); or a baseline name (then at optax's usual 1e-3)."""
    import jax

    import evolopt.architectures  # noqa: F401  (registers the built-in architectures)
    from evolopt.export import load_learned_optimizer, pretrained_names, resolve_path

    if spec in OPTAX_BASELINES:
        return Candidate(spec, baseline(spec, 1e-3), {}, 1e-3)
    arch, _, start = spec.partition(":")
    if start and arch in ARCHITECTURES:  # an architecture at a named theta, e.g. celo2:muon
        lopt = ARCHITECTURES.build(arch)
        if start not in lopt.named_inits:
            raise ConfigError(
                f"arch '{arch}' has no named theta '{start}'; valid: {', '.join(lopt.named_inits) or '(none)'}"
            )
        return _learned(spec, lopt, lopt.named_inits[start](jax.random.key(0)))
    if not resolve_path(spec).exists():
        raise ConfigError(
            f"optimizer '{spec}' is not a theta file, run dir, "
            f"pretrained name ({', '.join(pretrained_names()) or 'none'}) "
            f"or baseline ({', '.join(OPTAX_BASELINES)})"
        )
    return _learned(spec, *load_learned_optimizer(spec))


def _learned(label: str, lopt: LearnedOptimizer, theta: Theta) -> Candidate:
    """A learned candidate; its own rate is its ``learning_rate`` hyperparameter, if it has one."""
    own = lopt.hparams.get("learning_rate")
    return Candidate(label, lopt, theta, None if own is None else float(own))


def evaluate_task(
    task: Any,
    candidate: Candidate,
    baselines: list[str],
    seeds: int,
    lrs: np.ndarray,
    candidate_lrs: np.ndarray,
    mesh: Any = None,
    log: Callable[[str], None] = lambda s: None,
    score: str = "mean",
    reused: dict | None = None,
    first_seed: int = 0,
) -> Result:
    """Tune every baseline over ``lrs`` and the candidate over ``candidate_lrs`` (empty: its own rate only),
    each picking its rate by ``score`` (``"mean"`` or ``"final"`` training loss). ``reused``: baseline ->
    (its tuned rate, its grid rows) read from an earlier evaluation (:mod:`evolopt.eval_reuse`), not trained.
    Seeds ``first_seed .. first_seed + seeds - 1`` (:mod:`evolopt.eval_grid`)."""
    t0 = time.perf_counter()
    if task.family not in TASK_FAMILIES:  # called as a library: the built-ins may not be loaded yet
        from evolopt.config import load_builtins

        load_builtins()
    family = TASK_FAMILIES.build(task.family, **task.options)
    mesh = grid_mesh() if mesh is None else mesh
    grid: dict[str, list[tuple[float, float, float, float]]] = {}  # name -> [(lr, final, mean, valid)]

    def timed(name: str, fn: Callable[[], Any]) -> Any:  # progress: one line per grid
        t = time.perf_counter()
        value = fn()
        log(f"  {task.name} {name}: {time.perf_counter() - t:.1f} s")
        return value

    def tuned_over(name: str, lopt: LearnedOptimizer, theta: Theta, rates: np.ndarray) -> tuple:
        fit = functools.partial(tune, family, lopt, theta, task.steps, rates, seeds, mesh, score, first_seed)
        best, curves, valid = timed(name, fit)
        scores = grid_scores(curves, valid)
        grid[name] = list(zip(rates.tolist(), *(scores[k].tolist() for k in ("final", "mean", "valid"))))
        return best, curves, valid

    def at_own_rate() -> Tuned:
        once = functools.partial(train_grid, family, lopt, theta, task.steps, None, seeds, mesh, first_seed)
        c, v = timed(f"{candidate.label} (own lr)", once)
        return Tuned(np.nan if own_lr is None else own_lr, c[0], v[0])

    def tuned_baseline(name: str) -> Tuned:
        if name in (reused or {}):
            tuned_rate, grid[name] = reused[name]
            return tuned_rate
        return tuned_over(name, baseline(name, 1e-3), {}, lrs)[0]

    tuned = {n: tuned_baseline(n) for n in baselines}
    lopt, theta, own_lr = candidate.lopt, candidate.theta, candidate.own_lr
    if len(candidate_lrs):  # a candidate named like a baseline (optimizer=adam) keeps the baseline's grid row
        name = candidate.label if candidate.label not in tuned else f"{candidate.label} (candidate)"
        best, curves, valid = tuned_over(name, lopt, theta, candidate_lrs)
        on_grid = np.nonzero(np.isclose(candidate_lrs, own_lr, rtol=1e-6))[0] if own_lr is not None else []
        own = Tuned(own_lr, curves[on_grid[0]], valid[on_grid[0]]) if len(on_grid) else at_own_rate()
    else:
        best = own = at_own_rate()
    lr_tuned = bool(len(candidate_lrs))
    return _result(task, candidate.label, tuned, best, own, lr_tuned, grid, time.perf_counter() - t0, score)


def _result(
    task: Any,
    label: str,
    tuned: dict[str, Tuned],
    best: Tuned,
    own: Tuned,
    lr_tuned: bool,
    grid: dict,
    seconds: float,
    score: str,
) -> Result:
    """The task's row: the candidate (tuned and at its own rate) against the best tuned baseline by ``score``."""
    scores = {n: t.scores() for n, t in tuned.items()}
    best_name = min(tuned, key=lambda n: scores[n][score])  # ties: the first baseline listed
    base, cand, mine = scores[best_name], best.scores(), own.scores()
    base_final = base["final"]
    speedup, own_speedup = (steps_to_reach(smooth(t.curves).mean(0), base_final) / task.steps for t in (best, own))
    curves = {f"{label} (lr={best.lr:.0e}{', tuned' if lr_tuned else ''})": best.curves}
    if lr_tuned:
        curves[f"{label} (own lr={own.lr:.0e})"] = own.curves
    curves.update({f"{n} (lr={tuned[n].lr:.0e})": tuned[n].curves for n in tuned})
    return Result(
        task=task.name,
        in_distribution=task.in_distribution,
        candidate_lr=best.lr,
        candidate_train=cand["final"],
        candidate_valid=cand["valid"],
        baseline=best_name,
        baseline_lr=tuned[best_name].lr,
        baseline_train=base_final,
        baseline_valid=base["valid"],
        normalized_loss=ratio(cand[score], base[score]),
        speedup=speedup,
        own_lr=own.lr,
        own_train=mine["final"],
        own_valid=mine["valid"],
        own_normalized_loss=ratio(mine[score], base[score]),
        own_speedup=own_speedup,
        seconds=seconds,
        tuned=lr_tuned,
        curves=curves,
        grid=grid,
        score=score,
        candidate_mean=cand["mean"],
        baseline_mean=base["mean"],
        own_mean=mine["mean"],
        baselines={n: {"lr": tuned[n].lr, **scores[n]} for n in tuned},
    )

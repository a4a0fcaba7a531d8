"""Training one task over a (learning rate x seed) grid, sharded over devices, and picking the best rate.

The grid is flattened to ``n = L * S`` runs (``L`` learning rates, ``S`` seeds), padded
to a multiple of the device count ``D`` by repeating the last run, and laid out along
a 1-D mesh axis with a ``NamedSharding``: device ``d`` trains runs
``[d n_pad / D, (d + 1) n_pad / D)``, all under one ``jit(vmap(...))`` in which the
learning rate is a traced argument (one compilation per optimizer and task, whatever
the grid). The padding runs are dropped before anything is returned.

Seed ``s`` of every optimizer is ``jax.random.split(jax.random.key(EVAL_SEED), F + S)[F + s]``
(``F``: ``first_seed``, 0 by default): the same tasks, initialisations and minibatches for
every optimizer and rate. A split's keys do not depend on how many are drawn, so ``F = 2,
S = 2`` are seeds 2 and 3 of ``F = 0, S = 4``: another draw of the evaluation, disjoint
from the default's, to measure its noise.

Every run has three scores (:func:`run_scores`), each a mean over seeds: ``final``, the
smoothed final training loss (:func:`smooth`); ``mean``, the mean training loss over the
run (the area under the training curve / steps, what a user waiting for the whole run
pays for); ``valid``, the final validation (test) loss (:func:`evolopt.unroll.final_valid_loss`).
A rate's tuning score is ``final`` or ``mean`` (:data:`SCORES`, the ``score=`` option); the best
rate has the lowest one (NaN and inf score infinitely bad; ties go to the smaller rate). ``valid``
is never tuned on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from evolopt import threefry_cpu
from evolopt.architectures.base import LearnedOptimizer, Theta
from evolopt.unroll import train_curve

GRID_AXIS = "grid"
EVAL_SEED = 1234
LR_RANGE = (1e-4, 1.0)
SCORES = ("final", "mean")  # tuning criteria (score=); "valid" is reported, never tuned on


def lr_grid(n: int) -> np.ndarray:
    """``n`` learning rates log-spaced over ``LR_RANGE`` (``10^(-4 + 4 i / (n - 1))``); ``[1e-3]`` for
    ``n = 1``; empty for ``n = 0`` (no tuning)."""
    if n < 0:
        raise ValueError(f"a learning-rate grid needs n >= 0, got {n}")
    if n == 0:
        return np.zeros((0,))
    if n == 1:
        return np.array([1e-3])
    return np.logspace(np.log10(LR_RANGE[0]), np.log10(LR_RANGE[1]), n)


def grid_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: this process's local devices)."""
    return Mesh(np.array(jax.local_devices() if devices is None else devices), (GRID_AXIS,))


def smooth(curves: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Trailing running mean over ``w = max(1, floor(frac T))`` steps along the last axis:
    ``out[t] = mean(curve[max(0, t - w + 1) .. t])``; NaN/inf count as 1e30 (minibatch noise
    out of "final loss", divergence kept visible)."""
    w = max(1, int(frac * curves.shape[-1]))
    c = np.cumsum(np.nan_to_num(curves, nan=np.inf, posinf=1e30), axis=-1)
    out = c.copy()
    out[..., w:] = (c[..., w:] - c[..., :-w]) / w
    out[..., :w] = c[..., :w] / np.arange(1, w + 1)
    return out


def final_scores(curves: np.ndarray) -> np.ndarray:
    """``[L]`` scores of ``[L, S, T]`` curves: mean over seeds of the smoothed last loss (NaN -> inf)."""
    return np.nan_to_num(smooth(curves)[..., -1].mean(axis=-1), nan=np.inf)


def mean_scores(curves: np.ndarray) -> np.ndarray:
    """``[L]`` scores of ``[L, S, T]`` curves: mean over seeds of the mean loss over all ``T`` steps
    (``sum_t loss_t / T``, the area under the curve per step); a run with a NaN/inf step scores inf."""
    finite = np.all(np.isfinite(curves), axis=-1)
    return np.where(finite, np.where(finite[..., None], curves, 0.0).mean(-1), np.inf).mean(-1)


def grid_scores(curves: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """``{"final", "mean", "valid"}``, each ``[L]``, of a grid's ``[L, S, T]`` curves and ``[L, S]``
    final validation losses (NaN -> inf)."""
    return {
        "final": final_scores(curves),
        "mean": mean_scores(curves),
        "valid": np.nan_to_num(np.asarray(valid, float).mean(-1), nan=np.inf),
    }


def run_scores(curves: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """The three scores of one optimizer at one rate: ``curves [S, T]``, ``valid [S]``."""
    return {k: float(v[0]) for k, v in grid_scores(curves[None], np.asarray(valid)[None]).items()}


def with_learning_rate(lopt: LearnedOptimizer, learning_rate: Any) -> LearnedOptimizer:
    """``lopt`` whose ``learning_rate`` hyperparameter is ``learning_rate`` (may be traced)."""
    if "learning_rate" not in lopt.hparams:
        raise ValueError(
            f"arch '{lopt.name}' has no learning_rate hyperparameter "
            f"(options: {', '.join(sorted(lopt.hparams)) or 'none'})"
        )
    return dataclasses.replace(lopt, hparams={**lopt.hparams, "learning_rate": learning_rate})


def train_grid(
    family: Any,
    lopt: LearnedOptimizer,
    theta: Theta,
    steps: int,
    lrs: np.ndarray | None,
    seeds: int,
    mesh: Mesh | None = None,
    first_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``steps`` steps for every (rate, seed) pair; ``lrs=None``: once, at ``lopt``'s own hparams.
    Seeds ``first_seed .. first_seed + seeds - 1`` (module docstring).

    Returns ``(curves [L, S, steps], valid [L, S])``: raw (un-normalised) training losses per
    step and final validation losses, ``L = len(lrs)`` (1 for ``None``).
    """
    mesh = grid_mesh() if mesh is None else mesh
    tune = lrs is not None
    rates = np.asarray(lrs if tune else [np.nan], np.float32)
    n = len(rates) * seeds
    n_pad = -(-n // mesh.size) * mesh.size
    flat = np.minimum(np.arange(n_pad), n - 1)  # padding repeats the last run
    lr_flat, seed_flat = rates[flat // seeds], (flat % seeds).astype(np.int32)
    keys = jax.random.key_data(jax.random.split(jax.random.key(EVAL_SEED), first_seed + seeds)[first_seed:])

    def run(theta: Theta, lr: jax.Array, seed: jax.Array) -> tuple[jax.Array, jax.Array]:
        opt = with_learning_rate(lopt, lr) if tune else lopt
        key = jax.random.wrap_key_data(keys[seed])
        curve, valid = train_curve(theta, key, family, opt, steps, loss_clip=1e30)
        return curve * family.loss_scale, valid * family.loss_scale

    split, replicated = NamedSharding(mesh, PartitionSpec(GRID_AXIS)), NamedSharding(mesh, PartitionSpec())
    threefry_cpu.inline_threefry_on_cpu()  # each step's batch key: the same bits, no loop per draw on CPU
    grid = jax.jit(jax.vmap(run, in_axes=(None, 0, 0)), in_shardings=(replicated, split, split), out_shardings=split)
    curves, valid = grid(theta, jnp.asarray(lr_flat), jnp.asarray(seed_flat))
    curves, valid = np.asarray(curves)[:n], np.asarray(valid)[:n]
    return curves.reshape(len(rates), seeds, steps), valid.reshape(len(rates), seeds)


@dataclasses.dataclass
class Tuned:
    """One optimizer at its chosen rate: ``curves [S, T]`` and ``valid [S]`` raw losses."""

    lr: float
    curves: np.ndarray
    valid: np.ndarray

    def scores(self) -> dict[str, float]:
        """``{"final", "mean", "valid"}``: :func:`run_scores`."""
        return run_scores(self.curves, self.valid)


def tune(
    family: Any,
    lopt: LearnedOptimizer,
    theta: Theta,
    steps: int,
    lrs: np.ndarray,
    seeds: int,
    mesh: Mesh | None = None,
    score: str = "final",
    first_seed: int = 0,
) -> tuple[Tuned, np.ndarray, np.ndarray]:
    """The best rate of ``lrs`` by ``score`` (:data:`SCORES`; lowest wins), and the whole grid's curves and
    valid losses."""
    if score not in SCORES:
        raise ValueError(f"unknown score '{score}'; valid choices: {', '.join(SCORES)}")
    curves, valid = train_grid(family, lopt, theta, steps, lrs, seeds, mesh, first_seed)
    best = int(np.argmin(grid_scores(curves, valid)[score]))
    return Tuned(float(lrs[best]), curves[best], valid[best]), curves, valid

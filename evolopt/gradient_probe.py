"""The numerics of ``python -m evolopt.diagnose``: ES/PES gradient estimates at a fixed theta,
an autodiff reference for the same objective, and the smoothing gap.

The objective is what one generation of truncated/persistent meta-training measures. A
*particle* is one trajectory (task, init, batches from one key) trained for ``W + U``
truncations of ``K`` inner steps; truncation ``j`` runs with ``theta + delta_j``,
``delta_j ~ N(0, sigma^2 I)`` drawn afresh per truncation (as the strategy's ``ask`` does). The
first ``W`` (warm-up) truncations only move the trajectory on; the objective is the mean
meta-loss of the last ``U``:

    F(theta) = E_task E_delta [ (1/U) sum_{j>W} L_j(theta + delta_1, ..., theta + delta_j) ].

Per antithetic pair (``+delta``, ``-delta`` on the same trajectory) the estimators are

    PES:        g = (1/U) sum_{j>W} [ (B_j^+ - B_j^-) xi_j + (A_j^+ - A_j^-) delta_j / sigma^2 ] / 2
    truncated:  g = (1/U) sum_{j>W} (L_j^+ - L_j^-) delta_j / (2 sigma^2)
    full:       g = (Lbar^+ - Lbar^-) delta / (2 sigma^2)   (one delta for all truncations)

with ``xi_j = sum_{i<=j} delta_i / sigma^2`` restarted at a trajectory reset and ``B``/``A`` the
losses before/after it (:mod:`evolopt.strategies.pes` derives them). PES is unbiased for
``grad F``; truncated ES drops how earlier deltas shaped the state and is biased; full-unroll ES
estimates the gradient of ``F`` smoothed with one delta, which has the same gradient to first
order in sigma. The reference is ``jax.grad`` of the same particle objective, averaged over
``+delta``/``-delta`` and over particles of its own (so its noise is independent of the
estimates').
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from evolopt import threefry_cpu
from evolopt.architectures.base import LearnedOptimizer
from evolopt.contracts import TaskFamily, TruncationLoss
from evolopt.meta import make_curve_evaluator
from evolopt.unroll import UnrollConfig, init_inner_state, unroll

ESTIMATORS = ("pes", "truncated", "full")


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a particle trains: the family, the learned optimizer, the unroll, the theta layout."""

    family: TaskFamily
    lopt: LearnedOptimizer
    unroll_cfg: UnrollConfig
    theta: Any  # the pytree at which everything is measured
    sigma: float
    truncations: int = 4  # U: measured truncations per particle
    warmup: int = 0  # W: truncations before them (perturbed too, not scored)
    chunk: int = 32  # particles per vmapped batch (memory)

    @property
    def flat(self) -> jax.Array:
        return ravel_pytree(self.theta)[0]

    def unravel(self, flat: jax.Array) -> Any:
        return ravel_pytree(self.theta)[1](flat)

    def rollout(self, flat: jax.Array, deltas: jax.Array, key: jax.Array) -> TruncationLoss:
        """The trajectory of ``key`` trained ``W + U`` truncations at ``flat + deltas[j]``; leaves [W + U]."""
        st = init_inner_state(key, self.unravel(flat), self.family, self.lopt, self.unroll_cfg)

        def one(st, delta):
            return unroll(self.unravel(flat + delta), st, self.family, self.lopt, self.unroll_cfg)

        return jax.lax.scan(one, st, deltas)[1]

    def objective(self, flat: jax.Array, deltas: jax.Array, key: jax.Array) -> jax.Array:
        """The particle's scored meta-loss: mean total loss of the last U truncations."""
        return jnp.mean(self.rollout(flat, deltas, key).total[self.warmup :])

    def deltas(self, key: jax.Array, shared: bool = False) -> jax.Array:
        n = self.warmup + self.truncations
        d = self.flat.size
        if shared:
            return jnp.broadcast_to(self.sigma * jax.random.normal(key, (1, d)), (n, d))
        return self.sigma * jax.random.normal(key, (n, d))


def pair_estimates(probe: Probe, plus: TruncationLoss, minus: TruncationLoss, deltas: jax.Array) -> dict:
    """PES and truncated-ES estimates [D] of one antithetic pair from its split losses."""
    score = deltas / probe.sigma**2
    scored = jnp.arange(deltas.shape[0]) >= probe.warmup

    def body(xi_prev, inp):
        s, bp, ap, bm, am, reset, use = inp
        xi = xi_prev + s
        g_pes = 0.5 * ((bp - bm) * xi + (ap - am) * s)
        g_tes = 0.5 * ((bp + ap) - (bm + am)) * s
        return jnp.where(reset, s, xi), (use * g_pes, use * g_tes)

    inputs = (score, plus.before, plus.after, minus.before, minus.after, plus.reset, scored)
    _, (g_pes, g_tes) = jax.lax.scan(body, jnp.zeros_like(score[0]), inputs)
    return {"pes": g_pes.sum(0) / probe.truncations, "truncated": g_tes.sum(0) / probe.truncations}


def es_particles(probe: Probe, key: jax.Array, n: int, full: bool = True) -> dict[str, np.ndarray]:
    """``n`` antithetic pairs' estimates (``{estimator: [n, D]}``) plus their losses.

    Also returns ``loss_plus``/``loss_minus`` [n] (scored mean meta-loss of each partner),
    ``clipped`` [n] (fraction of the pair's scored truncations whose mean loss sits at the
    clip value) and ``nonfinite`` [n] (NaN/inf inner steps).
    """
    flat, clip = probe.flat, probe.unroll_cfg.loss_clip

    def one(k):
        k_traj, k_eps = jax.random.split(k)
        deltas = probe.deltas(k_eps)
        plus, minus = probe.rollout(flat, deltas, k_traj), probe.rollout(flat, -deltas, k_traj)
        out = pair_estimates(probe, plus, minus, deltas)
        w = probe.warmup
        lp, lm = jnp.mean(plus.total[w:]), jnp.mean(minus.total[w:])
        out |= {"loss_plus": lp, "loss_minus": lm}
        at_clip = jnp.concatenate([plus.total[w:], minus.total[w:]]) >= clip * (1 - 1e-6)
        out |= {"clipped": jnp.mean(at_clip), "nonfinite": jnp.sum(plus.nonfinite + minus.nonfinite)}
        if full:
            shared = probe.deltas(k_eps, shared=True)
            fp = probe.objective(flat, shared, k_traj)
            fm = probe.objective(flat, -shared, k_traj)
            out["full"] = 0.5 * (fp - fm) * shared[0] / probe.sigma**2
        return out

    keys = jax.random.split(key, n)
    threefry_cpu.inline_threefry_on_cpu()  # the unrolls' batch keys: same bits, no loop per draw on CPU
    res = jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=min(probe.chunk, n)))(keys)
    return {k: np.asarray(v, np.float64) for k, v in res.items()}


def reference_particles(probe: Probe, key: jax.Array, n: int) -> np.ndarray:
    """``n`` particles' autodiff gradients [n, D] of the objective, averaged over +/-delta."""
    flat = probe.flat
    grad = jax.grad(probe.objective)

    def one(k):
        k_traj, k_eps = jax.random.split(k)
        deltas = probe.deltas(k_eps)
        return 0.5 * (grad(flat, deltas, k_traj) + grad(flat, -deltas, k_traj))

    keys = jax.random.split(key, n)
    threefry_cpu.inline_threefry_on_cpu()  # the unrolls' batch keys: same bits, no loop per draw on CPU
    res = jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=min(probe.chunk, n)))(keys)
    return np.asarray(res, np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def snr(particles: np.ndarray) -> dict[str, float]:
    """Signal and noise of a mean of i.i.d. per-particle estimates ``g_i`` [n, D].

    ``noise = E|g_i - g|^2`` (trace of the covariance), ``signal = |g|^2`` estimated without
    bias as ``|mean|^2 - noise / n``. A mean of ``m`` particles then has expected squared cosine
    with ``g`` of about ``rho m / (rho m + 1)``, ``rho = signal / noise``, and two independent such
    means have cosine about ``rho m / (rho m + 1)``.
    """
    n = particles.shape[0]
    mean = particles.mean(0)
    noise = float(np.sum((particles - mean) ** 2) / max(1, n - 1))
    signal = max(0.0, float(mean @ mean) - noise / n)
    return {"signal": signal, "noise": noise, "rho": signal / noise if noise > 0 else float("inf")}


def predicted_cos_independent(rho: float, m: int) -> float:
    return rho * m / (rho * m + 1.0)


def particles_for_cosine(rho: float, target: float) -> float:
    """Particles ``m`` whose mean has cosine ``target`` with the true gradient: ``c^2/(1-c^2)/rho``."""
    return float("inf") if rho <= 0 else target**2 / (1.0 - target**2) / rho


def _scorer(probe: Probe, key: jax.Array, num_tasks: int, steps: int):
    """``flat -> [E, steps]`` normalised curves on E fixed fresh tasks (the validation meta-loss): of the
    training loss, or with ``unroll.meta_loss=valid|both`` of the validation loss (or the two's mean),
    weighted by ``unroll.meta_weight``: their mean is the objective being trained."""
    cfg = probe.unroll_cfg
    args = (num_tasks, steps, cfg.loss_clip, cfg.meta_loss, cfg.meta_weight, cfg.valid_share)
    # XLA's defaults, as everywhere in the probe (and jit options may only sit on the outer jit)
    evaluate = make_curve_evaluator(probe.family, probe.lopt, *args, cpu_reassociate=False)
    return jax.jit(lambda flat: evaluate(probe.unravel(flat), key).weighted())


def line_search(
    probe: Probe, key: jax.Array, directions: dict[str, np.ndarray], radii: list[float], num_tasks: int, steps: int
) -> list[dict]:
    """Validation meta-loss at ``theta - r d / |d|`` for each direction and radius (same tasks as
    :func:`smoothing_gap` for the same key): does a descent step on the estimated gradient help?"""
    score = _scorer(probe, jax.random.split(key)[0], num_tasks, steps)
    l0 = float(np.asarray(score(probe.flat)).mean())
    rows = []
    for name, d in directions.items():
        unit = jnp.asarray(d / np.linalg.norm(d), jnp.float32)
        for r in radii:
            loss = float(np.asarray(score(probe.flat - r * unit)).mean())
            rows.append({"direction": name, "radius": r, "loss_theta": l0, "loss": loss, "change": loss / l0 - 1})
    return rows


def smoothing_gap(
    probe: Probe, key: jax.Array, sigmas: list[float], samples: int, num_tasks: int, steps: int
) -> list[dict]:
    """Validation meta-loss at theta vs at ``theta +- sigma eps`` on the same fixed tasks.

    Returns one row per sigma: ``loss_theta``, ``loss_perturbed`` (mean over ``samples``
    antithetic pairs), ``gap`` (relative), ``frac_below`` (perturbed thetas that beat theta),
    ``curvature`` (mean of ``(L+ + L-)/2 - L0``, second order) and ``slope`` (mean
    ``|L+ - L-| / (2 sigma |eps|)``, first order), ``clip_frac`` (steps at the clip value).
    """
    clip = probe.unroll_cfg.loss_clip
    k_tasks, k_eps = jax.random.split(key)
    score = _scorer(probe, k_tasks, num_tasks, steps)
    base = np.asarray(score(probe.flat))
    l0 = float(base.mean())
    rows = []
    for i, sigma in enumerate(sigmas):
        eps = jax.random.normal(jax.random.fold_in(k_eps, i), (samples, probe.flat.size))
        plus = np.array([np.asarray(score(probe.flat + sigma * e)).mean() for e in eps])
        minus = np.array([np.asarray(score(probe.flat - sigma * e)).mean() for e in eps])
        both = np.concatenate([plus, minus])
        norms = np.linalg.norm(np.asarray(eps), axis=1)
        rows.append(
            {
                "sigma": sigma,
                "loss_theta": l0,
                "loss_perturbed": float(both.mean()),
                "gap": float(both.mean() / l0 - 1.0),
                "frac_below": float(np.mean(both < l0)),
                "curvature": float(np.mean(0.5 * (plus + minus) - l0)),
                "slope": float(np.mean(np.abs(plus - minus) / (2 * sigma * norms))),
                "clip_frac_theta": float(np.mean(base >= clip * (1 - 1e-6))),
            }
        )
    return rows

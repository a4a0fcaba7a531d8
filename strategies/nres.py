"""Noise-Reuse Evolution Strategies, one trajectory per particle (Li et al. 2023).

[1] O. Li, J. Harrison, J. Sohl-Dickstein, V. Smith, L. Metz. "Variance-Reduced Gradient
    Estimation via Noise-Reuse in Online Evolution Strategies", NeurIPS 2023, arXiv 2304.12180.

Like :mod:`evolopt.strategies.pes`, but a pair keeps its perturbation ``delta`` from one
truncation to the next instead of drawing a new one, and draws afresh only after a
trajectory of the pair restarts. A trajectory that saw one ``delta`` throughout is
smoothed as a whole, ``J = E[sum_j L_j(theta + delta)]``, whose gradient
``E[sum_j L_j delta] / sigma^2`` each truncation estimates by

    g_j = (L_j^+ - L_j^-) delta / (2 sigma^2),

with no growing accumulator: PES's variance grows with the number of perturbations a
trajectory has accumulated, NRES's does not ([1] finds NRES the lowest-variance member
of this family of unbiased online estimators, under assumptions stated there).

The general rule, which covers every case below, is PES's: a trajectory credits the
scores ``delta / sigma^2`` of every *distinct* perturbation it has been trained with
(``grad E[f(theta + d_1, theta + d_2)] = E[f (d_1/sigma_1^2 + d_2/sigma_2^2)]`` for
independent ``d_1, d_2``), so it stays unbiased whenever noise is redrawn:

* a reset inside truncation j starts the new trajectory with the old ``delta``;
  the next ask redraws, so that trajectory credits two perturbations (the one of its
  first, partial truncation and its own);
* the strategy learns of a reset only after the truncation it happened in, so even
  resets on a truncation boundary start with the previous ``delta`` for K steps;
* the K tasks of a member share its theta, hence its ``delta``: a pair redraws when
  *any* of its tasks restarts, and its other trajectories then credit the new
  ``delta`` as well. With ``tasks_per_member=1`` (or trajectories that all restart
  together) each trajectory sees at most two perturbations; with K staggered tasks,
  about K + 1, between NRES's variance and PES's.

A reused ``delta`` keeps the sigma it was drawn with, so under a sigma schedule a
pair's sigma changes only when it redraws.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from evolopt.contracts import TruncationLoss
from evolopt.registry import register_strategy
from evolopt.strategies.base import NoiseSchedule, OuterOptimizer, option_sets
from evolopt.strategies.pes import PER_PARTICLE_OUTER, PES
from evolopt.strategies.pes import State as PESState


@struct.dataclass
class State(PESState):
    # Set by tell when a trajectory of the pair restarted; the next ask draws a new delta
    # there, and tell credits it as new to every trajectory of the pair.
    redraw: jax.Array  # [P] bool


class NRES(PES):
    """Noise-Reuse ES: PES whose pairs redraw their perturbation only after a reset."""

    def _initial_state(self, mean: jax.Array) -> State:
        base = super()._initial_state(mean)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        return State(**fields, redraw=jnp.ones((self.num_pairs,), bool))

    def _new_noise(self, state: State) -> jax.Array:
        return state.redraw

    def _trajectory_scores(self, state: State, score: jax.Array) -> jax.Array:
        # accum already holds a reused delta's score: add it only the first time.
        return state.accum + jnp.where(state.redraw[:, None], score, 0.0)[:, None]

    def _end_truncation(self, state: State, losses: TruncationLoss) -> State:
        return state.replace(redraw=jnp.any(losses.reset[: self.num_pairs], axis=1))


@register_strategy("nres")
@option_sets(noise=NoiseSchedule(), outer=PER_PARTICLE_OUTER)
def nres(
    population_size: int,
    solution: Any,
    num_generations: int,
    *,
    tasks_per_member: int = 4,
    noise: NoiseSchedule,
    outer: OuterOptimizer,
) -> NRES:
    """Noise-Reuse ES (unbiased, lower variance than PES on long trajectories); options as
    ``strategy=pes``; ``tasks_per_member`` is passed by the trainer."""
    return NRES(population_size, solution, tasks_per_member, outer.build(num_generations), noise.schedule())

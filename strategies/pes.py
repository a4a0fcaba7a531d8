"""Persistent Evolution Strategies with one trajectory per particle (Vicol et al. 2021).

[1] P. Vicol, L. Metz, J. Sohl-Dickstein. "Unbiased Gradient Estimation in Unrolled
    Computation Graphs with Persistent Evolution Strategies", ICML 2021, arXiv 2112.13835.

A *particle* is one (antithetic pair p, task k): member p trains trajectory k with
``theta + delta_p``, member ``p + N/2`` the same trajectory (same key, same task,
same batches) with ``theta - delta_p``. The trajectory, its resets and staggering
belong to :mod:`evolopt.unroll`; this strategy only sees each truncation's
:class:`~evolopt.contracts.TruncationLoss`, split at a reset.

Estimator. Let truncation j of a trajectory run with ``theta_j = theta + delta_j``,
``delta_j ~ N(0, sigma_j^2 I)`` independent across truncations, and let ``L_j`` be its
meta-loss, which depends on ``delta_1 .. delta_j`` (through the inner state) and on no
later ``delta``. The objective is the Gaussian-smoothed loss of the whole trajectory,
``J(theta) = E[sum_j L_j]``. The score identity
``grad_theta E[f(theta + delta)] = E[f(theta + delta) delta / sigma^2]``, applied to each
``delta_i``, and ``E[L_j delta_i] = 0`` for ``i > j`` give

    grad J = sum_j E[L_j xi_j],      xi_j = sum_{i <= j} delta_i / sigma_i^2.

The partner sees ``-delta_i`` throughout, so ``xi^- = -xi^+`` and the pair's estimate is

    g_j = (L_j^+ - L_j^-) xi_j / 2,

which for a constant sigma is the paper's ``(L^+ - L^-) sum_i delta_i / (2 sigma^2)``
(their ``1/(N sigma^2) sum_i L_i xi_i`` over N particles, pairs folded). Truncated ES
keeps only ``delta_j / sigma_j^2`` and is biased: it ignores how ``theta`` shaped the
state it starts from.

Resets. If the trajectory ends inside truncation j, the steps before the reset belong
to the old trajectory, and the steps after to a new one that has only seen
``theta_j``, so with ``B``/``A`` the loss before/after the reset

    g_j = [(B^+ - B^-) xi_j + (A^+ - A^-) delta_j / sigma_j^2] / 2,
    xi  <- delta_j / sigma_j^2   if reset   else   xi_j.

Crediting ``A`` to ``xi_j`` too would stay unbiased (``xi_j - delta_j/sigma_j^2`` is
zero-mean and independent of the new trajectory) but noisier; resetting ``xi`` to 0
instead of ``delta_j / sigma_j^2`` would be biased (the new trajectory's later losses
depend on ``delta_j`` through its first steps, and that would never be credited). The
generation's update direction is the mean of ``g`` over
pairs and tasks.

Sigma schedules. The accumulator stores scores ``delta_i / sigma_i^2``, each with the
std ``sigma_i`` that drew it, so a schedule keeps the estimator unbiased for the
objective smoothed with each truncation's own sigma. (Summing raw perturbations and
dividing by the current sigma^2 would weight older ones by ``(sigma_i / sigma_j)^2``.)

Unbiasedness holds for a fixed ``theta``; in training the mean moves while a
trajectory persists, a bias of the order of the outer learning rate (learned_optimization
calls it hysteresis).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from evolopt.contracts import Strategy, TruncationLoss
from evolopt.registry import register_strategy
from evolopt.strategies.base import NoiseSchedule, OuterOptimizer, option_sets

# pes/nres defaults: AdamW(1e-3, wd 1e-4), sigma 0.01: Celo2's sigma and decay, with mu-LO's
# learning rate rather than Celo2's 5e-5, which is tuned for 100k generations.
PER_PARTICLE_OUTER = OuterOptimizer(optimizer="adamw", learning_rate=1e-3, weight_decay=1e-4)


@struct.dataclass
class State:
    mean: jax.Array  # [D]
    std: jax.Array  # sigma of the latest ask
    opt_state: optax.OptState
    pert: jax.Array  # [P, D] delta of each pair's "+" member in this truncation
    pert_std: jax.Array  # [P] the sigma each delta was drawn with
    accum: jax.Array  # [P, K, D] sum of delta_i / sigma_i^2 over the trajectory's earlier truncations
    generation: jax.Array  # int32: completed tells, the sigma schedule's step


class PES(Strategy):
    """Persistent ES, one accumulator per (antithetic pair, task) trajectory.

    Members ``p`` and ``p + N/2`` are the pair ``theta +- delta_p``; ``tell`` takes the
    losses of every member on each of its ``num_tasks`` trajectories, split at resets.
    """

    def __init__(
        self,
        population_size: int,
        solution: Any,
        num_tasks: int = 1,
        optimizer: optax.GradientTransformation = optax.adam(learning_rate=1e-3),
        std_schedule: Callable = optax.constant_schedule(0.01),
        persistent: bool = True,
    ):
        """``solution``: a theta (its structure); ``num_tasks``: trajectories per member (K);
        ``persistent=False`` gives truncated ES."""
        if population_size < 2 or population_size % 2:
            raise ValueError(f"population_size={population_size} must be even (antithetic pairs)")
        self.population_size = population_size
        self.num_tasks = num_tasks
        self.optimizer = optimizer
        self.std_schedule = std_schedule
        self.persistent = persistent
        flat, self.unravel = ravel_pytree(solution)
        self.num_dims = flat.size

    @property
    def num_pairs(self) -> int:
        return self.population_size // 2

    @partial(jax.jit, static_argnames=("self",))
    def init(self, key: jax.Array, theta0: Any) -> State:
        return self._initial_state(ravel_pytree(theta0)[0])

    def _initial_state(self, mean: jax.Array) -> State:
        p, k, d = self.num_pairs, self.num_tasks, self.num_dims
        std = jnp.asarray(self.std_schedule(0), jnp.float32)
        return State(
            mean=mean,
            std=std,
            opt_state=self.optimizer.init(jnp.zeros(d)),
            pert=jnp.zeros((p, d)),
            pert_std=jnp.full((p,), std),
            accum=jnp.zeros((p, k, d)),  # the first trajectories were built with the unperturbed theta
            generation=jnp.zeros((), jnp.int32),
        )

    def _new_noise(self, state: State) -> jax.Array:
        """[P] bool: which pairs draw a fresh delta at this ask (PES: all of them)."""
        return jnp.ones((self.num_pairs,), bool)

    @partial(jax.jit, static_argnames=("self",))
    def ask(self, key: jax.Array, state: State) -> tuple[Any, State]:
        """``theta +- delta`` as N thetas: ``[mean + delta_p]_p`` then ``[mean - delta_p]_p``."""
        # No lag: the sigma of generation g draws generation g's perturbations.
        std = jnp.asarray(self.std_schedule(state.generation), jnp.float32)
        new = self._new_noise(state)
        z = jax.random.normal(key, (self.num_pairs, self.num_dims))
        pert = jnp.where(new[:, None], std * z, state.pert)
        pert_std = jnp.where(new, std, state.pert_std)
        population = jnp.concatenate([state.mean + pert, state.mean - pert])
        return jax.vmap(self.unravel)(population), state.replace(std=std, pert=pert, pert_std=pert_std)

    def _trajectory_scores(self, state: State, score: jax.Array) -> jax.Array:
        """xi_j [P, K, D]: the scores of every delta that has shaped each trajectory so far."""
        if not self.persistent:
            return jnp.broadcast_to(score[:, None], state.accum.shape)
        return state.accum + score[:, None]

    def particle_estimates(self, state: State, losses: TruncationLoss) -> tuple[jax.Array, jax.Array]:
        """Per-particle gradient estimates g [P, K, D] and the next accumulators [P, K, D]."""
        p = self.num_pairs
        score = state.pert / jnp.square(state.pert_std)[:, None]  # delta_j / sigma_j^2
        xi = self._trajectory_scores(state, score)
        d_before = 0.5 * (losses.before[:p] - losses.before[p:])  # [P, K]
        d_after = 0.5 * (losses.after[:p] - losses.after[p:])
        grads = d_before[..., None] * xi + d_after[..., None] * score[:, None]
        # Partners share the trajectory key, hence its length and reset step.
        reset = losses.reset[:p, :, None]
        accum = jnp.where(reset, score[:, None], xi) if self.persistent else jnp.zeros_like(xi)
        return grads, accum

    def _check(self, losses: TruncationLoss) -> None:
        want = (self.population_size, self.num_tasks)
        if losses.before.shape != want:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_tasks} task(s) per member and "
                f"{self.population_size} members, but got losses of shape {losses.before.shape}: "
                f"build it with the trainer's tasks_per_member"
            )

    @partial(jax.jit, static_argnames=("self",))
    def tell(self, key: jax.Array, population: Any, losses: TruncationLoss, state: State) -> tuple[State, dict]:
        """Move the mean by the optimizer along the mean of the per-particle estimates."""
        self._check(losses)
        grads, accum = self.particle_estimates(state, losses)
        grad = jnp.mean(grads, axis=(0, 1))
        updates, opt_state = self.optimizer.update(grad, state.opt_state, state.mean)
        state = state.replace(
            mean=optax.apply_updates(state.mean, updates),
            opt_state=opt_state,
            accum=accum,
            generation=state.generation + 1,
        )
        return self._end_truncation(state, losses), {}

    def _end_truncation(self, state: State, losses: TruncationLoss) -> State:
        return state

    def mean(self, state: State) -> Any:
        return self.unravel(state.mean)


@register_strategy("pes")
@option_sets(noise=NoiseSchedule(), outer=PER_PARTICLE_OUTER)
def pes(
    population_size: int,
    solution: Any,
    num_generations: int,
    *,
    tasks_per_member: int = 4,
    noise: NoiseSchedule,
    outer: OuterOptimizer,
) -> PES:
    """Persistent ES, unbiased under truncated unrolls; ``tasks_per_member`` is passed by
    the trainer (it shapes the accumulators)."""
    return PES(population_size, solution, tasks_per_member, outer.build(num_generations), noise.schedule())

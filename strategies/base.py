"""The one interface the generation step needs from a strategy, over evosax's ask/tell.

evosax minimises fitness and works on flat vectors; :class:`EvosaxStrategy` hands it
theta pytrees, reduces the per-(member, task) truncation losses to the fitness
an algorithm expects, and exposes the search distribution's centre as theta.
Algorithms that set ``takes_truncation_loss = True`` (our PES, NoiseReuseES)
receive the whole :class:`~evolopt.contracts.TruncationLoss` (``[N, K]`` leaves),
since an unbiased persistent estimator must split losses at trajectory resets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm
from evosax.core import fitness_shaping
from jax.flatten_util import ravel_pytree

from evolopt.contracts import Strategy, TruncationLoss
from evolopt.registry import ConfigError

FITNESS_SHAPING = {
    "identity": fitness_shaping.identity_fitness_shaping_fn,
    "centered_rank": fitness_shaping.centered_rank_fitness_shaping_fn,
    "standardize": fitness_shaping.standardize_fitness_shaping_fn,
    "normalize": fitness_shaping.normalize_fitness_shaping_fn,
}


def no_metrics(key, population, fitness, state, params) -> dict:
    """evosax's default metrics carry three [D] vectors per generation; we log our own."""
    return {}


def choose(kind: str, value: str, table: dict) -> Any:
    if value not in table:
        raise ConfigError(f"unknown {kind} '{value}'; valid choices: {', '.join(sorted(table))}")
    return table[value]


def outer_optimizer(
    name: str,
    learning_rate: float,
    num_generations: int,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup: int = 0,
    grad_clip: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """The optax optimizer that moves the ES mean along the estimated gradient.

    ``schedule``: "constant" or "cosine" (to 0.1 x lr at the last generation), with
    an optional linear ``warmup``; ``grad_clip > 0`` clips the estimate's global norm.
    """
    schedules = {
        "constant": lambda: optax.constant_schedule(learning_rate),
        "cosine": lambda: optax.cosine_decay_schedule(learning_rate, max(1, num_generations - warmup), 0.1),
    }
    lr = choose("schedule", schedule, schedules)()
    if warmup > 0:
        lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), lr], [warmup])
    optimizers = {
        "adam": lambda: optax.adam(lr, b1=b1, b2=b2),
        "adamw": lambda: optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay),
        "sgd": lambda: optax.sgd(lr),
        "sgdm": lambda: optax.sgd(lr, momentum=b1),
    }
    opt = choose("outer optimizer", name, optimizers)()
    return optax.chain(optax.clip_by_global_norm(grad_clip), opt) if grad_clip > 0 else opt


def sigma_schedule(sigma: float, decay: float = 1.0, sigma_min: float = 0.0) -> Callable:
    """``sigma * decay**generation``, floored at ``sigma_min``."""
    if decay == 1.0:
        return optax.constant_schedule(sigma)
    return lambda count: jnp.maximum(sigma * decay**count, sigma_min)


class EvosaxStrategy(Strategy):
    """An evosax algorithm with its params, speaking theta pytrees and truncation losses."""

    def __init__(self, es: Any, params: Any | None = None, init_std: float = 0.0):
        self.es = es
        self.params = es.default_params if params is None else params
        self.population_size = es.population_size
        self.is_distribution = isinstance(es, DistributionBasedAlgorithm)
        self.takes_truncation_loss = getattr(es, "takes_truncation_loss", False)
        self.init_std = init_std  # spread of the initial population of population-based algorithms

    def init(self, key: jax.Array, theta0: Any) -> Any:
        if self.is_distribution:
            return self.es.init(key, theta0, self.params)
        k_pop, k_init = jax.random.split(key)
        flat = ravel_pytree(theta0)[0]
        noise = jax.random.normal(k_pop, (self.population_size, flat.size))
        population = jax.vmap(self.es._unravel_solution)(flat + self.init_std * noise)
        fitness = jnp.full((self.population_size,), jnp.inf)  # unevaluated: never beats a real score
        return self.es.init(k_init, population, fitness, self.params)

    def ask(self, key: jax.Array, state: Any) -> tuple[Any, Any]:
        return self.es.ask(key, state, self.params)

    def tell(self, key: jax.Array, population: Any, losses: TruncationLoss, state: Any) -> tuple[Any, dict]:
        fitness = losses if self.takes_truncation_loss else self.fitness(losses)
        return self.es.tell(key, population, fitness, state, self.params)

    def mean(self, state: Any) -> Any:
        """The theta to report, evaluate and export: the distribution's centre, else the best so far."""
        if self.is_distribution:
            return self.es.get_mean(state)
        return self.es._unravel_solution(state.best_solution)

"""Any evosax algorithm as a strategy: ``strategy=evosax strategy.algorithm=<name>``.

evosax 0.3 ships 37 algorithms (``evosax.algorithms.algorithms``, Lange 2022,
arXiv 2212.04180) with differing constructors. This module builds one from a
uniform set of options, passing each only where the class takes it:

* ``sigma``: the search scale, as ``std_init`` when the class's params have one,
  as ``std_schedule`` (with ``sigma_decay``/``sigma_min``) when its constructor
  takes one, and as the spread of the initial population of population-based
  algorithms (GAs, PSO, DE);
* ``optimizer`` and its options: only when the constructor takes an optax
  optimizer; ``"default"`` keeps the class's own (e.g. SNES's natural-gradient
  ``sgd(1.0)``);
* ``fitness_shaping``: ``"default"`` keeps the class's own (CMA-ES and NES use
  their rank weights).

An option set away from its default that the algorithm cannot use is an error
rather than silently ignored. The named shortcuts ``strategy=cma_es``,
``sep_cma_es`` and ``snes`` expose only the options those classes use.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
from evosax.algorithms import algorithms
from evosax.core.fitness_shaping import weights_fitness_shaping_fn
from jax.flatten_util import ravel_pytree

from evolopt.registry import ConfigError, register_strategy
from evolopt.strategies.base import (
    FITNESS_SHAPING,
    EvosaxStrategy,
    NoiseSchedule,
    OuterOptimizer,
    no_metrics,
    option_sets,
    shaping_fn,
)

SHAPING = {**FITNESS_SHAPING, "weights": weights_fitness_shaping_fn}

# Names we refuse, with the reason: evosax's PES/NRES truncate in lockstep with their own
# (T, K), blind to our trajectories and resets; the SV variants need several means.
REFUSED = {
    "PersistentES": "truncates in lockstep with its own T and K; use strategy=pes",
    "NoiseReuseES": "truncates in lockstep with its own T and K; use strategy=nres",
    "SV_CMA_ES": "keeps several means; not supported by the trainer",
    "SV_Open_ES": "keeps several means; not supported by the trainer",
}

# strategy=evosax keeps the class's own optimizer unless one is named.
EVOSAX_OUTER = OuterOptimizer(optimizer="default")


def build_evosax(
    algorithm: str,
    population_size: int,
    solution: Any,
    num_generations: int,
    noise: NoiseSchedule = NoiseSchedule(),
    fitness_shaping: str = "default",
    outer: OuterOptimizer = EVOSAX_OUTER,
) -> EvosaxStrategy:
    """The evosax class ``algorithm`` wrapped as an :class:`EvosaxStrategy`; see the module docstring."""
    if algorithm in REFUSED:
        raise ConfigError(f"strategy.algorithm={algorithm} {REFUSED[algorithm]}")
    valid = sorted(set(algorithms) - set(REFUSED))
    if algorithm not in valid:
        raise ConfigError(f"unknown evosax algorithm '{algorithm}'; valid choices: {', '.join(valid)}")
    cls = algorithms[algorithm]
    takes = inspect.signature(cls.__init__).parameters

    def refuse(option: str, why: str) -> None:
        raise ConfigError(f"strategy.{option} does not apply to {algorithm}: {why}")

    kwargs: dict[str, Any] = {"metrics_fn": no_metrics}
    if outer.optimizer != "default":
        if "optimizer" not in takes:
            refuse("optimizer", "it takes no optax optimizer")
        kwargs["optimizer"] = outer.build(num_generations)
    else:
        changed = sorted(k for k, v in dataclasses.asdict(outer).items() if v != getattr(EVOSAX_OUTER, k))
        if changed:
            refuse(changed[0], "it only applies with strategy.optimizer set (adam, adamw, sgd, sgdm)")
    if "std_schedule" in takes:
        kwargs["std_schedule"] = noise.schedule()
    elif (noise.sigma_decay, noise.sigma_min) != (1.0, 0.0):
        refuse("sigma_decay" if noise.sigma_decay != 1.0 else "sigma_min", "it adapts its own step size")
    if fitness_shaping != "default":
        kwargs["fitness_shaping_fn"] = shaping_fn(fitness_shaping, SHAPING)
    if "num_generations" in takes:  # DiffusionEvolution plans its noise schedule over the run
        kwargs["num_generations"] = num_generations
    if "sampling_fn" in takes:  # RandomSearch: Gaussian samples around the initial theta
        flat, unravel = ravel_pytree(solution)
        sigma = noise.sigma
        kwargs["sampling_fn"] = lambda key: unravel(flat + sigma * jax.random.normal(key, flat.shape))

    es = cls(population_size, solution, **kwargs)
    params = es.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=jnp.asarray(noise.sigma, jnp.float32))
    return EvosaxStrategy(es, params, init_std=noise.sigma)


@register_strategy("evosax")
@option_sets(noise=NoiseSchedule(), outer=EVOSAX_OUTER)
def evosax_strategy(
    population_size: int,
    solution: Any,
    num_generations: int,
    *,
    algorithm: str = "SNES",
    noise: NoiseSchedule,
    fitness_shaping: str = "default",
    outer: OuterOptimizer,
) -> EvosaxStrategy:
    """Any key of ``evosax.algorithms.algorithms`` (``algorithm``), options passed where they apply."""
    return build_evosax(algorithm, population_size, solution, num_generations, noise, fitness_shaping, outer)


@register_strategy("cma_es")
def cma_es(
    population_size: int, solution: Any, num_generations: int, *, sigma: float = 0.01, fitness_shaping: str = "default"
) -> EvosaxStrategy:
    """CMA-ES (Hansen & Ostermeier 2001): full covariance, O(D^2) memory, an eigh per
    generation; for D up to a few thousand. ``sigma`` is the initial step size."""
    return build_evosax("CMA_ES", population_size, solution, num_generations, NoiseSchedule(sigma), fitness_shaping)


@register_strategy("sep_cma_es")
def sep_cma_es(
    population_size: int, solution: Any, num_generations: int, *, sigma: float = 0.01, fitness_shaping: str = "default"
) -> EvosaxStrategy:
    """Separable CMA-ES (Ros & Hansen 2008): diagonal covariance, O(D) per generation."""
    return build_evosax("Sep_CMA_ES", population_size, solution, num_generations, NoiseSchedule(sigma), fitness_shaping)


@register_strategy("snes")
def snes(
    population_size: int, solution: Any, num_generations: int, *, sigma: float = 0.01, fitness_shaping: str = "default"
) -> EvosaxStrategy:
    """Separable NES (Schaul et al. 2011): per-coordinate step sizes by natural gradient."""
    return build_evosax("SNES", population_size, solution, num_generations, NoiseSchedule(sigma), fitness_shaping)

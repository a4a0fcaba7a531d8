"""What the built-in strategies share: option sets, the outer optimizer, the evosax adapter.

**Option sets.** Several factories take the same options (the outer optimizer's, the noise
schedule's). Each set is a frozen dataclass declared once here; :func:`option_sets`
splices its fields into a factory's signature as keyword-only options, so they appear
in ``--help``, are type-checked and rejected by name like any other option, and the
factory receives one dataclass instance.

**evosax.** evosax minimises fitness on flat vectors; :class:`EvosaxStrategy` adapts an
evosax algorithm to :class:`~evolopt.contracts.Strategy`: it hands evosax theta pytrees,
reduces the per-(member, task) truncation losses to one fitness per member with
:meth:`~evolopt.contracts.Strategy.fitness`, and reports the search distribution's centre
as theta. Estimators that need the losses split at resets (PES, NRES) implement
:class:`~evolopt.contracts.Strategy` themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
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


def shaping_fn(name: str, table: dict = FITNESS_SHAPING) -> Callable:
    """The evosax fitness shaping function called ``name`` in ``table``."""
    return choose("fitness shaping", name, table)


@dataclasses.dataclass(frozen=True)
class OuterOptimizer:
    """The optax optimizer that moves the ES mean along the estimated gradient.

    ``optimizer``: adam, adamw (decoupled ``weight_decay``), sgd, or sgdm (momentum ``b1``);
    ``lr_schedule``: "constant" or "cosine" (``learning_rate`` decaying to 0.1 x it at the
    last generation), after an optional linear ``warmup`` from 0 over that many
    generations; ``grad_clip > 0`` clips the estimate's global norm first.
    """

    optimizer: str = "adam"
    learning_rate: float = 3e-3
    lr_schedule: str = "constant"
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    b1: float = 0.9
    b2: float = 0.999

    def build(self, num_generations: int) -> optax.GradientTransformation:
        """The optax transformation for a run of ``num_generations``."""
        lr0, warmup = self.learning_rate, self.warmup
        schedules = {
            "constant": lambda: optax.constant_schedule(lr0),
            "cosine": lambda: optax.cosine_decay_schedule(lr0, max(1, num_generations - warmup), 0.1),
        }
        lr = choose("schedule", self.lr_schedule, schedules)()
        if warmup > 0:
            lr = optax.join_schedules([optax.linear_schedule(0.0, lr0, warmup), lr], [warmup])
        optimizers = {
            "adam": lambda: optax.adam(lr, b1=self.b1, b2=self.b2),
            "adamw": lambda: optax.adamw(lr, b1=self.b1, b2=self.b2, weight_decay=self.weight_decay),
            "sgd": lambda: optax.sgd(lr),
            "sgdm": lambda: optax.sgd(lr, momentum=self.b1),
        }
        opt = choose("outer optimizer", self.optimizer, optimizers)()
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), opt) if self.grad_clip > 0 else opt


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """The perturbation scale of generation g: ``max(sigma * sigma_decay**g, sigma_min)``."""

    sigma: float = 0.01
    sigma_decay: float = 1.0
    sigma_min: float = 0.0

    def schedule(self) -> Callable:
        """``generation -> sigma``, an optax schedule."""
        if self.sigma_decay == 1.0:
            return optax.constant_schedule(self.sigma)
        return lambda count: jnp.maximum(self.sigma * self.sigma_decay**count, self.sigma_min)


def option_sets(**sets: Any) -> Callable[[Callable], Callable]:
    """Decorator: a factory's keyword-only parameter ``name`` becomes the fields of ``sets[name]``.

    ``@option_sets(outer=OuterOptimizer(learning_rate=1e-3))`` on
    ``def f(n, *, outer, sigma=0.1)`` gives ``f`` the signature
    ``(n, *, optimizer="adam", learning_rate=1e-3, ..., sigma=0.1)`` (the instance's values
    are this factory's defaults) and calls the original with
    ``outer=OuterOptimizer(optimizer=..., learning_rate=..., ...)``. The registry reads
    options from the signature, so ``--help``, type checks and unknown-key errors are
    those of plain options.
    """

    def decorator(factory: Callable) -> Callable:
        signature = inspect.signature(factory)
        missing = sorted(set(sets) - set(signature.parameters))
        if missing:
            raise TypeError(f"{factory.__qualname__} has no parameter '{missing[0]}' for its option set")
        fields = {name: [f.name for f in dataclasses.fields(default)] for name, default in sets.items()}
        params = []
        for p in signature.parameters.values():
            if p.name not in sets:
                params.append(p)
                continue
            default = sets[p.name]
            params += [
                inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=getattr(default, f))
                for f in fields[p.name]
            ]
        spliced = signature.replace(parameters=params)  # a name in two sets is a ValueError here

        @functools.wraps(factory)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = spliced.bind(*args, **kwargs).arguments
            for name, default in sets.items():
                chosen = {f: given.pop(f) for f in fields[name] if f in given}
                given[name] = dataclasses.replace(default, **chosen)
            return factory(**given)

        wrapper.__signature__ = spliced
        return wrapper

    return decorator


class EvosaxStrategy(Strategy):
    """An evosax algorithm with its params as a :class:`~evolopt.contracts.Strategy`.

    ``tell`` gives evosax one fitness per member, :meth:`Strategy.fitness` of its losses.
    """

    def __init__(self, es: Any, params: Any | None = None, init_std: float = 0.0):
        self.es = es
        self.params = es.default_params if params is None else params
        self.population_size = es.population_size
        self.is_distribution = isinstance(es, DistributionBasedAlgorithm)
        self.init_std = init_std  # spread of the initial population of population-based algorithms
        self.unravel = ravel_pytree(es.solution)[1]  # flat [D] -> theta pytree

    def init(self, key: jax.Array, theta0: Any) -> Any:
        if self.is_distribution:
            return self.es.init(key, theta0, self.params)
        k_pop, k_init = jax.random.split(key)
        flat = ravel_pytree(theta0)[0]
        noise = jax.random.normal(k_pop, (self.population_size, flat.size))
        population = jax.vmap(self.unravel)(flat + self.init_std * noise)
        fitness = jnp.full((self.population_size,), jnp.inf)  # unevaluated: never beats a real score
        return self.es.init(k_init, population, fitness, self.params)

    def ask(self, key: jax.Array, state: Any) -> tuple[Any, Any]:
        return self.es.ask(key, state, self.params)

    def tell(self, key: jax.Array, population: Any, losses: TruncationLoss, state: Any) -> tuple[Any, dict]:
        return self.es.tell(key, population, self.fitness(losses), state, self.params)

    def mean(self, state: Any) -> Any:
        """The theta to report, evaluate and export: the distribution's centre, else the best so far."""
        if self.is_distribution:
            return self.es.get_mean(state)
        return self.unravel(state.best_solution)

"""OpenAI-ES (Salimans et al. 2017, arXiv 1703.03864) through evosax's ``Open_ES``.

Antithetic Gaussian perturbations ``theta +- sigma eps``, fitness shaping
(centered ranks by default), and the gradient estimate
``g = 1/(N sigma) sum_i f_i eps_i`` fed to an optax outer optimizer. With
truncated, persistent unrolls (``unroll.truncation_length < min_length``) it is
*truncated ES*, which is biased for long horizons: use ``strategy=pes`` there.
"""

from __future__ import annotations

from typing import Any

from evosax.algorithms import Open_ES

from evolopt.registry import register_strategy
from evolopt.strategies.base import EvosaxStrategy, NoiseSchedule, OuterOptimizer, no_metrics, option_sets, shaping_fn


@register_strategy("open_es")
@option_sets(noise=NoiseSchedule(), outer=OuterOptimizer())
def open_es(
    population_size: int,
    solution: Any,
    num_generations: int,
    *,
    noise: NoiseSchedule,
    outer: OuterOptimizer,
    fitness_shaping: str = "centered_rank",
) -> EvosaxStrategy:
    """OpenAI-ES with antithetic sampling and an optax outer optimizer."""
    es = Open_ES(
        population_size,
        solution,
        use_antithetic_sampling=True,
        optimizer=outer.build(num_generations),
        std_schedule=noise.schedule(),
        fitness_shaping_fn=shaping_fn(fitness_shaping),
        metrics_fn=no_metrics,
    )
    return EvosaxStrategy(es)

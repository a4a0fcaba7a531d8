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
from evolopt.strategies.base import FITNESS_SHAPING, EvosaxStrategy, choose, no_metrics, outer_optimizer, sigma_schedule


@register_strategy("open_es")
def open_es(
    population_size: int,
    solution: Any,
    num_generations: int,
    *,
    sigma: float = 0.01,
    sigma_decay: float = 1.0,
    sigma_min: float = 0.0,
    optimizer: str = "adam",
    learning_rate: float = 3e-3,
    lr_schedule: str = "constant",
    warmup: int = 0,
    weight_decay: float = 0.0,
    grad_clip: float = 0.0,
    fitness_shaping: str = "centered_rank",
) -> EvosaxStrategy:
    """OpenAI-ES with antithetic sampling and an optax outer optimizer."""
    es = Open_ES(
        population_size,
        solution,
        use_antithetic_sampling=True,
        optimizer=outer_optimizer(
            optimizer, learning_rate, num_generations, weight_decay, lr_schedule, warmup, grad_clip
        ),
        std_schedule=sigma_schedule(sigma, sigma_decay, sigma_min),
        fitness_shaping_fn=choose("fitness shaping", fitness_shaping, FITNESS_SHAPING),
        metrics_fn=no_metrics,
    )
    return EvosaxStrategy(es)

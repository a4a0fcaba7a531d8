"""Hand-designed optimizers wrapped as (theta-less) architectures.

They run in the same harness as learned optimizers: the evaluation baselines and
the "Adam members" of the throughput benchmark.
"""

from __future__ import annotations

import optax
import optax.contrib

from evolopt.architectures.base import LearnedOptimizer

OPTAX_BASELINES = {
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=1e-4),
    "sgdm": lambda lr: optax.sgd(lr, momentum=0.9),
    "sgd": lambda lr: optax.sgd(lr),
    # Muon on matrices, Adam (same lr) on the rest: what Celo2 is at theta_init=muon, hand-tuned
    "muon": lambda lr: optax.contrib.muon(lr),
}


def baseline(name: str, learning_rate: float) -> LearnedOptimizer:
    """``optax.<name>`` at ``learning_rate``, with an empty theta."""
    if name not in OPTAX_BASELINES:
        raise ValueError(f"unknown baseline '{name}'; valid choices: {', '.join(OPTAX_BASELINES)}")

    def make(theta, learning_rate: float):
        del theta
        return optax.with_extra_args_support(OPTAX_BASELINES[name](learning_rate))

    return LearnedOptimizer(name, lambda key: {}, make, {"learning_rate": learning_rate})

"""adam_hparams: Adam whose hyperparameters are the meta-parameters.

The sanity baseline: ES on this four-scalar theta should land near the best
learning rate of a grid search. Theta is unconstrained and decoded as

    lr  = exp(log_lr)
    b1  = sigmoid(clip(logit_b1, -12, 12)),   b2 = sigmoid(clip(logit_b2, -12, 12))
    eps = exp(log_eps)

and the update is optax's Adam (Kingma & Ba 2015) with those values:

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
    u = -lr · (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The logit clip keeps 1 - b >= 6e-6, so a population member never reaches b = 1
(which would divide by zero in the bias correction) in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from evolopt.architectures.base import LearnedOptimizer
from evolopt.registry import ConfigError, register_arch

LOGIT_CLIP = 12.0


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def init_theta(
    key: jax.Array,
    learning_rate: float = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> dict:
    """Scalars encoding the given Adam hyperparameters (``key`` is unused: theta is deterministic)."""
    del key
    return {
        "log_lr": jnp.asarray(math.log(learning_rate), jnp.float32),
        "logit_b1": jnp.asarray(_logit(b1), jnp.float32),
        "logit_b2": jnp.asarray(_logit(b2), jnp.float32),
        "log_eps": jnp.asarray(math.log(eps), jnp.float32),
    }


def decode(theta: dict) -> dict:
    """``{"learning_rate", "b1", "b2", "eps"}`` as (possibly traced) scalars."""
    return {
        "learning_rate": jnp.exp(theta["log_lr"]),
        "b1": jax.nn.sigmoid(jnp.clip(theta["logit_b1"], -LOGIT_CLIP, LOGIT_CLIP)),
        "b2": jax.nn.sigmoid(jnp.clip(theta["logit_b2"], -LOGIT_CLIP, LOGIT_CLIP)),
        "eps": jnp.exp(theta["log_eps"]),
    }


def adam_hparams_optimizer(theta: dict) -> optax.GradientTransformationExtraArgs:
    """Adam with the hyperparameters decoded from ``theta``; extra args are ignored."""
    hp = decode(theta)
    return optax.chain(
        optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
        optax.scale(-hp["learning_rate"]),
    )


@register_arch("adam_hparams")
def adam_hparams(
    *,
    init_learning_rate: float = 1e-3,
    init_b1: float = 0.9,
    init_b2: float = 0.999,
    init_eps: float = 1e-8,
) -> LearnedOptimizer:
    """Adam with learned (log lr, logit b1, logit b2, log eps); the options set theta's start."""
    for name, value in (("init_b1", init_b1), ("init_b2", init_b2)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name}={value} must lie in (0, 1)")
    for name, value in (("init_learning_rate", init_learning_rate), ("init_eps", init_eps)):
        if not value > 0.0:
            raise ConfigError(f"{name}={value} must be > 0")
    return LearnedOptimizer(
        name="adam_hparams",
        init_theta=lambda key: init_theta(key, init_learning_rate, init_b1, init_b2, init_eps),
        make=adam_hparams_optimizer,
        hparams={},
    )

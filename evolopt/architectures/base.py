"""What a learned-optimizer architecture is, for the rest of evolopt.

An architecture is a pure parameter initialiser and ONE function that turns
parameters ``theta`` (a pytree of arrays) into an optax transform. The inner loop
of meta-training calls that function with ``theta`` traced and vmapped over the
population; users call it with a loaded ``theta``. There is no second
implementation.

The transform's ``update`` receives, as optax extra args, ``loss`` (the scalar
training loss at the current params) and ``num_steps`` (the planned length of
the training run); rules that do not need them ignore them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax

Theta = Any  # a pytree of float32 arrays


@dataclasses.dataclass(frozen=True)
class LearnedOptimizer:
    """An architecture with its hyperparameters fixed.

    Attributes:
      name: registry name, e.g. ``"celo2"``; stored in exported files.
      init_theta: ``key -> theta``, the meta-parameters' initial value.
      make: ``(theta, **hparams) -> optax.GradientTransformationExtraArgs``.
      hparams: the keyword arguments ``make`` is called with by default
        (learning rate, weight decay, ...); exported with theta and overridable
        at load time.
      named_inits: other starting points for meta-training, ``name -> (key -> theta)``
        (e.g. Celo2's ``"muon"``: the theta whose rule is Muon); chosen with the
        ``theta_init`` config key.
    """

    name: str
    init_theta: Callable[[jax.Array], Theta]
    make: Callable[..., optax.GradientTransformationExtraArgs]
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    named_inits: dict[str, Callable[[jax.Array], Theta]] = dataclasses.field(default_factory=dict)

    def optimizer(self, theta: Theta, **overrides: Any) -> optax.GradientTransformationExtraArgs:
        """The optax transform for ``theta``; ``overrides`` replace ``hparams`` entries."""
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise ValueError(
                f"unknown option '{unknown[0]}' for arch '{self.name}'; "
                f"valid options: {', '.join(sorted(self.hparams)) or '(none)'}"
            )
        return self.make(theta, **{**self.hparams, **overrides})

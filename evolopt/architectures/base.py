"""What a learned-optimizer architecture is, for the rest of evolopt.

An architecture is a pure parameter initialiser and ONE function that turns
parameters ``theta`` (a pytree of arrays) into an optax transform. The inner loop
of meta-training calls that function with ``theta`` traced and vmapped over the
population; users call it with a loaded ``theta``. There is no second
implementation.

The transform's ``update`` receives, as optax extra args, ``loss`` (the scalar
training loss at the current params; optax's ``value=`` name is accepted too) and
``num_steps`` (the planned length of the training run); rules that do not need
them ignore them. A rule that uses the loss warns once when it is not given (its
loss features then stay at their initial values). Rules whose features include
the parameters need ``params``; ``update(..., params=None)`` then raises one line
saying so.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import jax
import optax

SHORT_ROW = 16  # float32 lanes of a 512-bit vector: LLVM leaves a loop of fewer iterations scalar


def short_rows(shape: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` (ndim >= 2) has rows shorter than ``SHORT_ROW`` floats."""
    return len(shape) >= 2 and shape[-1] < SHORT_ROW


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
      flat_short_rows: a speed setting for training loops evolopt runs (meta-training's inner
        loop, evaluation curves): carry each parameter tensor whose rows are shorter than ``SHORT_ROW``
        (16) floats flat and apply the update there (``unroll.to_carry``), so that XLA CPU vectorises
        the rule's fused per-element loop on it. Results equal up to float rounding. On for the
        rules it speeds up (small_fc_lopt 1.22x, celo 1.07-1.12x per generation); off for
        celo2_base (0.94-1.02x) and the rest (README "Short rows carried flat").
    """

    name: str
    init_theta: Callable[[jax.Array], Theta]
    make: Callable[..., optax.GradientTransformationExtraArgs]
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    named_inits: dict[str, Callable[[jax.Array], Theta]] = dataclasses.field(default_factory=dict)
    flat_short_rows: bool = False

    def optimizer(self, theta: Theta, **overrides: Any) -> optax.GradientTransformationExtraArgs:
        """The optax transform for ``theta``; ``overrides`` replace ``hparams`` entries."""
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise ValueError(
                f"unknown option '{unknown[0]}' for arch '{self.name}'; "
                f"valid options: {', '.join(sorted(self.hparams)) or '(none)'}"
            )
        return optax_conventions(self.make(theta, **{**self.hparams, **overrides}), self.name)


_WARNED: set[str] = set()


def optax_conventions(tx: optax.GradientTransformation, name: str) -> optax.GradientTransformationExtraArgs:
    """``tx`` with optax's calling conventions: ``value=`` is ``loss=``; a missing loss for a rule that
    uses it warns once; ``params=None`` for a rule that needs params is one clear ValueError."""
    try:
        takes_loss = "loss" in inspect.signature(tx.update).parameters
    except (TypeError, ValueError):
        takes_loss = False

    def update(updates, state, params=None, **extra):
        value = extra.pop("value", None)
        if extra.get("loss") is None and value is not None:
            extra["loss"] = value
        if takes_loss and extra.get("loss") is None and name not in _WARNED:
            _WARNED.add(name)
            warnings.warn(
                f"arch '{name}' uses the training loss: pass update(..., loss=loss) (or value=); "
                "without it its loss features stay constant",
                stacklevel=2,
            )
        if params is None:
            try:
                return tx.update(updates, state, None, **extra)
            except (ValueError, TypeError, AttributeError):
                raise ValueError(
                    f"arch '{name}' needs params: call update(grads, state, params) (its features include them)"
                ) from None
        return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update)

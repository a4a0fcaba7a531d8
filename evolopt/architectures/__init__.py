"""Learned-optimizer architectures, one module each, registered for ``arch=<name>``.

Importing this package registers every built-in architecture. Architecture
modules depend only on jax, numpy and optax, so exported optimizers need nothing
else.
"""

from evolopt.architectures import (  # noqa: F401  (imported to register)
    adam_hparams,
    celo,
    celo2,
    celo2_ns_input,
    mulo,
    small_fc_lopt,
)
from evolopt.architectures.base import LearnedOptimizer, Theta

__all__ = ["LearnedOptimizer", "Theta"]

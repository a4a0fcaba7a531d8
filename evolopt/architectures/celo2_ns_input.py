"""celo2_ns_input: Celo2 with Newton-Schulz moved from the MLP's output to its input.

Celo2 orthogonalises the MLP's output, ``step = NS5(MLP(x))``. At its Muon theta
(``d = m_0``) that makes meta-training start on a sharp point: a perturbation of theta
of size sigma leaks other features into ``d`` with weight ~sigma, and Newton-Schulz
(which multiplies small singular values by up to ~3.4^5) turns the leak into an O(1)
change of the step along the momentum's small singular directions
(experiments/es_diagnostics: the smoothing gap grows like sigma^0.43 and no step down
even the exact gradient helps).

Here the orthogonalised momentum is an input instead:

    x_14 = NS5(m_0)                 (ndim >= 2; ``m_0`` itself for vectors)
    o    = MLP(x_0 .. x_13, x_14)   (Celo2's 30 channels plus this one, same normalisation)
    d    = o_0 exp(exp_mult o_1)
    step = d rsqrt(1e-9 + mean d^2)  over the last two axes (no Newton-Schulz after the MLP)

The step is a smooth function of theta, and the ``muon`` theta (the MLP passes ``x_14``
through) is exactly Celo2's ``muon`` rule, Muon without Nesterov. Around it the MLP can
mix per-element terms (Adam-like ``m rsqrt(v)``, gradient, Adafactor channels) into
Muon's direction, which is what meta-training may learn. What it gives up: the
orthogonalisation of *learned* directions (only ``m_0``'s is available).
Everything else (Adam for biases and 1-D leaves, options) is Celo2's; theta is Celo2's
``ff_mod_stack`` with one more first-layer block ``w0__14`` of shape [1, hidden].
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from evolopt.architectures import celo2 as c2
from evolopt.architectures.base import LearnedOptimizer
from evolopt.registry import register_arch

BLOCK_SIZES = c2.BLOCK_SIZES + (1,)  # block 14: NS5(m_0)
NS_BLOCK = len(BLOCK_SIZES) - 1


def init_theta(key: jax.Array, hidden_size: int = 8, hidden_layers: int = 2) -> dict:
    """Random initial theta (as Celo2's, with 31 input channels)."""
    return c2.init_theta(key, hidden_size, hidden_layers, BLOCK_SIZES)


def muon_theta(key: jax.Array | None = None, hidden_size: int = 8, hidden_layers: int = 2) -> dict:
    """The theta whose rule is Muon without Nesterov: the MLP passes ``NS5(m_0)`` through."""
    return c2.momentum_theta(key, hidden_size, hidden_layers, BLOCK_SIZES, source_block=NS_BLOCK)


@register_arch("celo2_ns_input")
def celo2_ns_input_arch(
    *,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    adam_lr_mult: float = 20.0,
    param_regex: str = c2.DEFAULT_PARAM_REGEX,
    route_1d_to_adam: bool = True,
    exp_mult: float = 0.0,
    conv_as_matrix: bool = False,
) -> LearnedOptimizer:
    """Celo2 with ``NS5(m_0)`` as a 31st input channel and no Newton-Schulz on the output:
    smooth in theta at its ``muon`` start (see the module docstring)."""
    hparams = dict(locals())

    def make(theta: dict, **kw: Any) -> optax.GradientTransformationExtraArgs:
        return c2.celo2(theta, ns_input=True, **kw)

    return LearnedOptimizer(
        name="celo2_ns_input", init_theta=init_theta, make=make, hparams=hparams, named_inits={"muon": muon_theta}
    )

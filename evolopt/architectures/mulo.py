"""mulo: μLO, the AdafacMLP learned optimizer with μP per-tensor step multipliers.

Therien et al. 2024, "μLO: Compute-Efficient Meta-Generalization of Learned
Optimizers" (arXiv 2406.00153); we follow the authors' code
(bentherien/mu_learned_optimization, ``MuAdafacMLPLOpt``).

The rule is ``small_fc_lopt`` (AdafacMLP: 39 features, learned decays) with a wider
MLP, 39 -> 32 -> 32 -> 2, and a per-tensor multiplier ``s_P``:

    P <- P - lr · s_P · d · exp(exp_mult · m),      lr = 0.01, exp_mult = 1e-3.

``s_P`` is μP's Adam learning-rate multiplier (Tensor Programs V, Table 8), which
μLO carries over because the LO's per-coordinate outputs are Θ(1), as Adam's are:

  * hidden weight matrices: ``s_P = 1 / fan_in`` (fan_in = the layer's input width);
  * the input layer, the readout and every bias or other vector: ``s_P = 1``.

The optimizee itself should be μP-parametrised (readout initialised at zero and
multiplied by 1/width); that is the task's business, not the optimizer's.

Supplying s_P (the ``mup_multipliers`` hparam; the code reads it from a haiku
state entry, which ordinary param trees do not have):

  * ``"hidden_fan_in"`` (default): leaves with ndim >= 2 are weights laid out
    ``(..., fan_in, fan_out)`` as in flax and haiku. They are ordered by their
    path in natural order ("Dense_2" before "Dense_10"); the first is the input
    layer and the last the readout (s_P = 1), the others get ``1 / shape[-2]``.
    Vectors and scalars get 1. Params that are several models side by side
    (:class:`evolopt.contracts.SeparateModels`, a mixture of different models) get
    the rule applied to each model on its own. If your names do not sort from input to output, or
    your kernels are PyTorch-style (out, in), pass one of the next two forms.
  * ``"none"``: s_P = 1 everywhere (plain AdafacMLP with μLO's sizes).
  * a pytree of floats with the structure of the params.
  * a callable ``(path, shape) -> float``, where ``path`` is the tuple of the
    leaf's keys as strings, e.g. ``("params", "Dense_1", "kernel")``.

Only the string forms are config options (``arch=mulo mup_multipliers=none``); the
others are passed in code: ``lo.optimizer(theta, mup_multipliers=tree_or_fn)``.
The code's optional global-norm gradient clip (``lo_clip_grad``) is
``optax.clip_by_global_norm(1.0)`` chained before this transform.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from evolopt.architectures import small_fc_lopt as sfl
from evolopt.architectures.base import LearnedOptimizer
from evolopt.contracts import SeparateModels
from evolopt.registry import ConfigError, register_arch

RULES = ("hidden_fan_in", "none")
MupSpec = str | Callable[[tuple[str, ...], tuple[int, ...]], float] | Any  # or a pytree of floats


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _natural_key(path: tuple[str, ...]) -> tuple:
    # "Dense_10" sorts after "Dense_9": digit runs compare as numbers.
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)) for part in path)


def mup_multipliers_for(tree: Any, spec: MupSpec = "hidden_fan_in") -> list[float]:
    """The per-leaf s_P of ``tree`` (params, grads or updates), in ``jax.tree.leaves`` order.

    Shapes and paths are static, so this runs in Python even under jit.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [tuple(_key_name(k) for k in path) for path, _ in with_path]
    shapes = [tuple(np.shape(leaf)) for _, leaf in with_path]
    if callable(spec):
        return [float(spec(path, shape)) for path, shape in zip(paths, shapes)]
    if not isinstance(spec, str):
        return [float(s) for s in treedef.flatten_up_to(spec)]
    if spec == "none":
        return [1.0] * len(shapes)
    if spec != "hidden_fan_in":
        raise ValueError(f"unknown mup_multipliers '{spec}'; valid choices: {', '.join(RULES)}")
    if isinstance(tree, SeparateModels):  # each model has its own input layer and readout
        return [s for model in tree for s in mup_multipliers_for(model, spec)]
    weights = sorted((i for i, s in enumerate(shapes) if len(s) >= 2), key=lambda i: _natural_key(paths[i]))
    out = [1.0] * len(shapes)
    for i in weights[1:-1]:  # all but the input layer and the readout
        out[i] = 1.0 / shapes[i][-2]
    return out


def scale_by_mup(spec: MupSpec = "hidden_fan_in") -> optax.GradientTransformation:
    """Multiply each leaf of the updates by its μP multiplier s_P (see ``mup_multipliers_for``)."""

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        scales = mup_multipliers_for(updates, spec)
        leaves, treedef = jax.tree.flatten(updates)
        return treedef.unflatten([u * s for u, s in zip(leaves, scales)]), state

    return optax.GradientTransformation(init_fn, update_fn)


def mulo_optimizer(
    theta: dict,
    learning_rate: float = 0.01,
    exp_mult: float = 1e-3,
    mup_multipliers: MupSpec = "hidden_fan_in",
) -> optax.GradientTransformationExtraArgs:
    """μLO as an optax transform: ``-learning_rate · s_P · d exp(exp_mult m)``."""
    if isinstance(mup_multipliers, str) and mup_multipliers not in RULES:
        raise ValueError(f"unknown mup_multipliers '{mup_multipliers}'; valid choices: {', '.join(RULES)}")
    return optax.chain(
        sfl.scale_by_small_fc_lopt(theta, exp_mult),
        scale_by_mup(mup_multipliers),
        optax.scale(learning_rate),
    )


@register_arch("mulo")
def mulo(
    *,
    learning_rate: float = 0.01,
    exp_mult: float = 1e-3,
    mup_multipliers: str = "hidden_fan_in",
    hidden_size: int = 32,
    hidden_layers: int = 2,
) -> LearnedOptimizer:
    """μLO (Therien et al. 2024): AdafacMLP 39 -> 32 -> 32 -> 2 with μP step multipliers."""
    if mup_multipliers not in RULES:
        raise ConfigError(f"unknown mup_multipliers '{mup_multipliers}'; valid choices: {', '.join(RULES)}")
    return LearnedOptimizer(
        name="mulo",
        init_theta=lambda key: sfl.init_theta(key, hidden_size, hidden_layers),
        make=mulo_optimizer,
        hparams={"learning_rate": learning_rate, "exp_mult": exp_mult, "mup_multipliers": mup_multipliers},
    )

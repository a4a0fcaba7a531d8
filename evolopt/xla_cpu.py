"""XLA CPU compile options under which fused float reductions vectorise, and the vector width.

A learned rule's per-tensor statistics (``fused.mean_squares``: ``sum_i x_c[i]^2`` of ~16
recomputed channels) are fused reductions. XLA CPU may emit them as a scalar loop, because a
vectorised sum adds in another order and LLVM may reorder float additions only when allowed
(``reassoc``). ``REASSOCIATE`` allows that and the contraction of ``a * b + c`` into one
fused multiply-add, and nothing else: NaN and Inf semantics, exact division and exact
library functions stay as they are (the ``honor`` options, XLA's defaults, stated so that
a changed default cannot loosen them). Results move by float rounding only (~1e-7
relative); a diverging run still gives NaN. Which order a sum takes is the machine's: on a
2-core Xeon a plain 1-D or row sum came out the same under both (XLA vectorises some by itself
there), and the statistics still ran 4x faster.

Measured (``benchmarks/``): the 16-channel reduction of 8 tensors of 512x512, 23 -> 4.5 ms
(2-core AMD EPYC), 17 -> 4.1 ms (2-core Xeon); one update of 2.1M params 1.4-1.7x faster
(small_fc_lopt, celo2_base, celo); meta-training member-steps/s 1.28-1.33x (celo2,
celo2_ns_input), 1.17x (small_fc_lopt), 1.04-1.06x (Adam members) on the EPYC.

XLA CPU prefers 256-bit vectors even where the CPU has 512-bit ones (AVX-512), so a narrow
per-element MLP (celo2_base's, small_fc_lopt's hidden units: hundreds of multiply-adds per
element, compute-bound) runs in 8 lanes. ``vector_width=512`` asks for 16; LLVM caps it at the
widest registers the CPU has, so on a CPU without AVX-512 nothing changes. Measured on a 2-core
Xeon with AVX-512 (session 19, both reassociated): celo2_base's update in a training loop 15.3
-> 10.2 ms (2.1M params), optax.adam's unchanged (memory-bound); meta-training member-steps/s
1.31x (celo2_base), 1.18x (celo2), 1.36x (mulo) on image_mlp, 1.03-1.10x on image_conv, 0.98x
celo2_base on lm, Adam members 0.94-1.06x (noise). On a 2-core AMD EPYC (Zen 4, which runs a
512-bit instruction as two 256-bit halves; session 20) it gains less: meta-training 0.97x (celo2),
1.01-1.10x (celo2_base), 1.07x (small_fc_lopt), 1.18x (mulo), 0.97-0.98x (celo); in a training
loop of 2.1M params 0.96-1.31x per rule; one update per call of celo2_base 0.79-0.94x.

Options only reach the computation they are compiled with: a user's ``jax.jit`` of a train
step that calls an evolopt optax transform takes
``compiler_options=xla_cpu.compiler_options(vector_width=512)`` itself (``None`` off CPU), or
the process sets ``XLA_FLAGS="--xla_cpu_enable_fast_math=true --xla_cpu_prefer_vector_width=512"``
before jax starts (which applies them to every computation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from evolopt import threefry_cpu

REASSOCIATE: dict[str, bool] = {
    "xla_cpu_enable_fast_math": True,  # LLVM's fast-math flags, less every one the options below take back
    "xla_cpu_fast_math_honor_nans": True,
    "xla_cpu_fast_math_honor_infs": True,
    "xla_cpu_fast_math_honor_division": True,
    "xla_cpu_fast_math_honor_functions": True,
}


VECTOR_WIDTHS = (128, 256, 512)  # bits; XLA CPU's own choice (None) is 256


def check_vector_width(width: Any, option: str = "vector_width") -> None:
    """Raise ``ValueError`` in one line, naming ``option``, unless ``width`` is in ``VECTOR_WIDTHS`` or ``None``."""
    if width is not None and (isinstance(width, bool) or width not in VECTOR_WIDTHS):
        choices = ", ".join(map(str, VECTOR_WIDTHS))
        raise ValueError(f"{option}={width!r}; valid choices: {choices} (bits), null (XLA's own)")


def compiler_options(
    reassociate: bool = True, backend: str | None = None, vector_width: int | None = None
) -> dict[str, bool | int] | None:
    """The ``compiler_options`` for ``jax.jit`` on ``backend`` (default: jax's default backend).

    Args:
      reassociate: whether to let XLA CPU reorder float sums and fuse multiply-adds.
      backend: a jax platform name; the options exist on ``"cpu"`` only (other backends
        refuse unknown options), so anywhere else this is ``None``.
      vector_width: the SIMD width in bits XLA CPU should prefer (one of ``VECTOR_WIDTHS``), or
        ``None`` for XLA's choice (256). 512 doubles the lanes of a narrow per-element MLP on a
        CPU with AVX-512; LLVM caps it at the widest registers the CPU has, so elsewhere it
        changes nothing. With ``reassociate`` a vectorised sum then adds in 16 lanes, not 8:
        results move by rounding.

    Returns:
      On CPU, ``REASSOCIATE`` when ``reassociate`` plus ``xla_cpu_prefer_vector_width`` when
      ``vector_width`` is given, or ``None`` when neither (XLA's defaults); ``None`` elsewhere.
    """
    check_vector_width(vector_width)
    if (backend or jax.default_backend()) != "cpu":
        return None
    options: dict[str, bool | int] = dict(REASSOCIATE) if reassociate else {}
    if vector_width is not None:
        options["xla_cpu_prefer_vector_width"] = vector_width
    return options or None


def jit(fn: Callable[..., Any], reassociate: bool = True, vector_width: int | None = None, **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compiler_options` (``reassociate`` and
    ``vector_width`` on CPU), plus any ``compiler_options`` of ``kwargs`` (theirs win on a shared key).

    Options belong to a whole compiled computation, so jax takes them on the outermost jit only:
    a function made here with ``reassociate`` and then called inside another ``jax.jit`` fails to
    trace on CPU. Make it with ``reassociate=False`` there (or pass the options to the outer jit).
    Lowers jax's Threefry hash inline on CPU from then on (``threefry_cpu``: the same random bits, no
    loop per random call; generation steps compiled 1.75-2.8x faster on image and regression tasks
    and ran 0.98-1.23x as fast, README "Random draws without a loop on CPU").
    """
    threefry_cpu.inline_threefry_on_cpu()
    options = {**(compiler_options(reassociate, vector_width=vector_width) or {}), **kwargs.pop("compiler_options", {})}
    return jax.jit(fn, compiler_options=options or None, **kwargs)

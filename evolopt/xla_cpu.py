"""XLA CPU compile options under which fused float reductions vectorise.

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

Options only reach the computation they are compiled with: a user's ``jax.jit`` of a train
step that calls an evolopt optax transform takes ``compiler_options=xla_cpu.REASSOCIATE``
itself, or the process sets ``XLA_FLAGS=--xla_cpu_enable_fast_math=true`` before jax starts
(which applies it to every computation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

REASSOCIATE: dict[str, bool] = {
    "xla_cpu_enable_fast_math": True,  # LLVM's fast-math flags, less every one the options below take back
    "xla_cpu_fast_math_honor_nans": True,
    "xla_cpu_fast_math_honor_infs": True,
    "xla_cpu_fast_math_honor_division": True,
    "xla_cpu_fast_math_honor_functions": True,
}


def compiler_options(reassociate: bool = True, backend: str | None = None) -> dict[str, bool] | None:
    """The ``compiler_options`` for ``jax.jit`` on ``backend`` (default: jax's default backend).

    Args:
      reassociate: whether to let XLA CPU reorder float sums and fuse multiply-adds.
      backend: a jax platform name; the options exist on ``"cpu"`` only (other backends
        refuse unknown options), so anywhere else this is ``None``.

    Returns:
      ``REASSOCIATE`` on CPU when ``reassociate``, else ``None`` (XLA's defaults).
    """
    on_cpu = (backend or jax.default_backend()) == "cpu"
    return dict(REASSOCIATE) if reassociate and on_cpu else None


def jit(fn: Callable[..., Any], reassociate: bool = True, **kwargs: Any) -> Any:
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compiler_options` (``reassociate`` on CPU).

    Options belong to a whole compiled computation, so jax takes them on the outermost jit only:
    a function made here with ``reassociate`` and then called inside another ``jax.jit`` fails to
    trace on CPU. Make it with ``reassociate=False`` there (or pass the options to the outer jit).
    """
    return jax.jit(fn, compiler_options=compiler_options(reassociate), **kwargs)

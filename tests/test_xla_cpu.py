"""``evolopt.xla_cpu``: on CPU, float sums may be reassociated (vectorised) and nothing else changes:
NaN/Inf tests still see NaN and Inf, every rule's update moves by rounding only, and the
generation step and validation evaluator are compiled with the run's choice."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evolopt import xla_cpu

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA CPU options (every CI run is on CPU)")


def _cancelling_sum_input() -> np.ndarray:
    """1e8, fifteen ones, -1e8, zeros: added in order in float32 the ones vanish into 1e8 (its
    spacing there is 8) and the sum is 0; added in several lanes, most ones survive."""
    return np.array([1e8] + [1.0] * 15 + [-1e8] + [0.0] * 1007, np.float32)


def test_reassociation_only_reorders_sums():
    """Which order XLA adds in is the machine's business: on a 2-core AMD EPYC (session 16) the defaults
    summed the cancelling input in sequence (0) and the options in vector lanes (15); on a 2-core Xeon
    (session 17) both kept the same order (0 at 1024 elements). What holds on any machine: the options
    give a sum some order of the same additions gives (near the sequential 0 or the exact 15), and
    ``reassociate=False`` is XLA's default bit for bit."""
    x = _cancelling_sum_input()
    fused_sum = lambda v: jnp.sum(v * 1.0000001)  # noqa: E731  (a fused reduction, as a rule's statistics are)
    sequential = np.float32(0.0)
    for v in x * np.float32(1.0000001):
        sequential = np.float32(sequential + v)
    exact = float(np.sum(x.astype(np.float64) * 1.0000001))
    assert float(sequential) == 0.0 and abs(exact - 15.0) < 1e-4
    assert float(xla_cpu.jit(fused_sum, reassociate=False)(x)) == float(jax.jit(fused_sum)(x))
    # any order: the ones are each kept, lost or rounded at 1e8 (spacing 8), but nothing else happens
    assert abs(float(xla_cpu.jit(fused_sum)(x)) - exact) <= 16.0
    noise = np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32)
    rows = lambda v: jnp.sum(jnp.square(v * 1.0000001), axis=1)  # noqa: E731  (mean_squares' shape)
    np.testing.assert_allclose(xla_cpu.jit(rows)(noise), jax.jit(rows)(noise), rtol=1e-5)


def test_nan_and_inf_tests_and_exact_division_survive():
    """The meta-loss clips NaN/Inf losses to ``loss_clip`` with ``isfinite``: under fast math without
    the honor options the compiler may assume no NaN and drop the test."""
    x = jnp.array([1.0, jnp.nan, jnp.inf, -jnp.inf, 3.0] + [2.0] * 59, jnp.float32)
    clipped = lambda v: jnp.sum(jnp.where(jnp.isfinite(v), jnp.minimum(v, 1.5), 1.5))  # noqa: E731
    assert float(xla_cpu.jit(clipped)(x)) == 1.0 + 3 * 1.5 + 1.5 + 59 * 1.5
    assert np.isnan(float(xla_cpu.jit(jnp.sum)(x)))
    assert np.isnan(float(xla_cpu.jit(lambda v: jnp.max(v * 2.0))(x)))
    y, z = jnp.arange(1.0, 65.0, dtype=jnp.float32), jnp.linspace(0.1, 5.0, 64, dtype=jnp.float32)
    divide = lambda a, b: (a / b, a / 3.0, jnp.exp(a / 64.0), jax.lax.rsqrt(b))  # noqa: E731
    for fast, default in zip(xla_cpu.jit(divide)(y, z), jax.jit(divide)(y, z)):  # as XLA's default, bit for bit
        np.testing.assert_array_equal(fast, default)


def test_options_only_on_cpu_and_only_when_asked():
    assert xla_cpu.compiler_options(backend="cpu") == xla_cpu.REASSOCIATE
    assert xla_cpu.compiler_options(reassociate=False, backend="cpu") is None
    assert xla_cpu.compiler_options(backend="gpu") is None and xla_cpu.compiler_options(backend="tpu") is None
    wide = {"xla_cpu_prefer_vector_width": 512}
    assert xla_cpu.compiler_options(backend="cpu", vector_width=512) == {**xla_cpu.REASSOCIATE, **wide}
    assert xla_cpu.compiler_options(reassociate=False, backend="cpu", vector_width=512) == wide
    assert xla_cpu.compiler_options(backend="gpu", vector_width=512) is None
    with pytest.raises(ValueError, match=r"vector_width=300; valid choices: 128, 256, 512 \(bits\), null"):
        xla_cpu.compiler_options(backend="cpu", vector_width=300)


def test_jit_adds_a_callers_options_to_its_own(monkeypatch):
    """``xla_cpu.jit(..., compiler_options=extra)`` compiles with its own options and ``extra`` (``extra``
    winning on a shared key), as ``kernel_profile.py`` adds kernel tracing to meta-training's options."""
    seen = []
    monkeypatch.setattr(xla_cpu.jax, "jit", lambda fn, compiler_options=None, **kw: seen.append((compiler_options, kw)))
    extra = {"xla_cpu_enable_xprof_traceme": True, "xla_cpu_prefer_vector_width": 256}
    xla_cpu.jit(lambda v: v, True, 512, donate_argnums=0, compiler_options=extra)
    xla_cpu.jit(lambda v: v, False)
    own = {**xla_cpu.REASSOCIATE, "xla_cpu_prefer_vector_width": 512} if jax.default_backend() == "cpu" else {}
    assert seen == [({**own, **extra}, {"donate_argnums": 0}), (None, {})]


def test_options_sit_on_the_outer_jit_only():
    x = _cancelling_sum_input()
    inner = xla_cpu.jit(lambda v: jnp.sum(v * 1.0000001))
    with pytest.raises(ValueError, match="top-level"):  # as the docstring says: made with them, it cannot nest
        jax.jit(lambda v: inner(v) + 1.0)(x)
    plain = xla_cpu.jit(lambda v: jnp.sum(v * 1.0000001), reassociate=False)
    outer = xla_cpu.jit(lambda v: plain(v) + 1.0)  # the outer jit's options reach the inner computation
    assert float(outer(x)) == float(inner(x)) + 1.0


@pytest.mark.parametrize("name", ["small_fc_lopt", "celo2_base", "celo", "celo2", "mulo"])
def test_every_rule_update_moves_by_rounding_only(name):
    import evolopt.architectures  # noqa: F401
    from evolopt.registry import ARCHITECTURES

    arch = ARCHITECTURES.build(name)
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w": jax.random.normal(keys[0], (96, 80)) / 10,
        "b": jnp.zeros(80),
        "c": jax.random.normal(keys[1], (700,)),
    }
    grads = jax.tree.map(
        lambda p, k: jax.random.normal(k, p.shape) * 1e-2, params, {"w": keys[2], "b": keys[3], "c": keys[2]}
    )
    opt = arch.optimizer(arch.init_theta(jax.random.key(1)))

    def update(params, grads):
        return opt.update(grads, opt.init(params), params, loss=jnp.float32(1.0), num_steps=100)[0]

    default = jax.jit(update)(params, grads)
    for width in (None, 512):  # 512-bit vectors: sums in 16 lanes, and no other change
        fast = xla_cpu.jit(update, vector_width=width)(params, grads)
        for k in params:
            scale = float(jnp.max(jnp.abs(default[k])))
            err = f"{name} {k} width {width}"
            np.testing.assert_allclose(fast[k], default[k], rtol=1e-4, atol=1e-5 * scale, err_msg=err)


def test_generation_step_and_evaluator_take_the_runs_choice(monkeypatch):
    """``cpu_reassociate`` and ``cpu_vector_width`` in the config reach every jit of the hot path (the
    generation step and the validation evaluator); false and null compile with XLA's defaults."""
    from evolopt import loop, meta
    from evolopt.config import load_config

    asked = []
    real = xla_cpu.jit

    def spy(fn, reassociate=True, vector_width=None, **kw):
        asked.append((reassociate, vector_width))
        return real(fn, reassociate, vector_width, **kw)

    monkeypatch.setattr(xla_cpu, "jit", spy)
    tiny = ["population_size=4", "tasks_per_member=1", "unroll.truncation_length=2", "arch=small_fc_lopt"]
    assert load_config(tiny).cpu_vector_width == 512  # new runs: 512-bit vectors
    for flag, width in ((True, 512), (False, None), (True, 256)):
        asked.clear()
        cfg = load_config([*tiny, f"cpu_reassociate={str(flag).lower()}", f"cpu_vector_width={width or 'null'}"])
        trainer, theta0 = loop.build(cfg)
        assert trainer.cpu_reassociate is flag and trainer.cpu_vector_width == width
        loop.validation_evaluator(cfg, trainer)
        meta.jit_step(trainer, trainer.abstract_init(jax.random.key(0), theta0))
        assert asked == [(flag, width), (flag, width)]
    with pytest.raises(Exception, match="cpu_reassociate='yes' must be true or false"):
        loop.check_values(load_config([*tiny, "cpu_reassociate=yes"]))
    for bad in ("300", "true", "wide"):
        with pytest.raises(
            Exception, match=f"(?i)cpu_vector_width=.*{bad}.*; valid choices: 128, 256, 512 .bits., null"
        ):
            loop.check_values(load_config([*tiny, f"cpu_vector_width={bad}"]))


_UPDATE_AT_TWO_WIDTHS = """
import jax, jax.numpy as jnp, numpy as np
import evolopt.architectures
from evolopt import xla_cpu
from evolopt.registry import ARCHITECTURES
arch = ARCHITECTURES.build("celo2_base")
opt = arch.optimizer(arch.init_theta(jax.random.key(1)))
k = jax.random.split(jax.random.key(0), 2)
p, g = {"w": jax.random.normal(k[0], (256, 256)) / 16}, {"w": jax.random.normal(k[1], (256, 256)) * 1e-2}
update = lambda p, g: opt.update(g, opt.init(p), p, loss=jnp.float32(1.0), num_steps=100)[0]["w"]
xla_width, wide = (np.asarray(xla_cpu.jit(update, vector_width=w)(p, g)) for w in (None, 512))
print(int((xla_width != wide).sum()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="emulates an x86 CPU without AVX-512")
def test_512_bit_vectors_change_nothing_on_a_cpu_without_avx512():
    """As the docs say: LLVM caps the preferred width at the widest registers the CPU has, so on a CPU
    without AVX-512 (emulated: XLA's instruction set capped at AVX2) ``vector_width=512`` gives XLA's
    own results bit for bit (on an AVX-512 Xeon, uncapped, ~32k of these 65k elements move by rounding)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", _UPDATE_AT_TWO_WIDTHS], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "0"

"""``benchmarks/arch_step_time.py``'s training-loop protocol (``--loop K``) times what it says: K
updates, each from its own scaled grads and applied to the params, against an independent
reference (the same steps written out by hand), and reports per-update times."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("arch_step_time", REPO / "benchmarks" / "arch_step_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "LOOP", 3)
    return module


def test_loop_applies_each_update_from_its_own_grads(bench):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -2.0, 3.0])}
    tx = optax.sgd(0.1, momentum=0.9)  # linear in the grads: a step from unscaled grads would show
    state, looped = bench.update_call(tx, params, grads)()
    expected, expected_state = params, tx.init(params)
    for scale in (1.0, 4 / 3, 5 / 3):  # the k-th of K=3 updates sees grads x (1 + k / K)
        g = jax.tree.map(lambda x: scale * x, grads)
        updates, expected_state = tx.update(g, expected_state, expected)
        expected = optax.apply_updates(expected, updates)
    for k in params:
        np.testing.assert_allclose(looped[k], expected[k], rtol=1e-6)
    np.testing.assert_allclose(state[0].trace["b"], expected_state[0].trace["b"], rtol=1e-6)


def test_times_are_per_update(bench, monkeypatch):
    clock = iter(np.arange(0.0, 100.0, 0.6))  # every call takes 0.6 s of the fake clock
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench.time, "process_time", lambda: 0.0)
    call = bench.per_call(lambda: jnp.zeros(()), 3)
    wall, _ = bench.interleaved({"loop": call}, repeats=2)["loop"]
    assert wall == pytest.approx(200.0)  # 600 ms per call of 3 updates

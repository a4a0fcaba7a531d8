"""``evolopt.threefry_cpu``: jax's Threefry-2x32 lowered inline on CPU gives the same bits as jax's own
looped lowering (Random123's known-answer vectors; every ``jax.random`` draw a meta-training step makes,
compared with a fresh interpreter that never registers it), and leaves no loop in the compiled program."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
import pytest

from evolopt import threefry_cpu, xla_cpu

# Random123's known-answer vectors for Threefry-2x32, 20 rounds: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

# Draws as meta-training makes them (a step folded into a trajectory key, a minibatch's rows, a task's
# initial weights), vmapped over members as a generation runs them; printed as JSON so that a fresh
# interpreter's numbers (jax's own lowering) can be compared with this process's.
DRAWS = """
import json, sys, jax, jax.numpy as jnp
if sys.argv[1] == "inline":
    from evolopt import threefry_cpu
    assert threefry_cpu.inline_threefry_on_cpu()
def draws(key):
    step_key = jax.random.fold_in(key, 17)
    k_rows, k_init = jax.random.split(step_key)
    return [jax.random.key_data(step_key), jax.random.randint(k_rows, (64,), 0, 60000),
            jax.random.normal(k_init, (3, 5)), jax.random.uniform(k_rows, (7,))]
keys = jax.random.split(jax.random.key(20261207), 6)
out = jax.jit(jax.vmap(draws))(keys) + jax.jit(draws)(keys[0])
print(json.dumps([jnp.asarray(x).tolist() for x in out]))
"""


@pytest.mark.parametrize("key, counter, expected", KNOWN_ANSWERS)
def test_hash_matches_random123_known_answers(key, counter, expected):
    words = [jnp.asarray(w, jnp.uint32) for w in (*key, *counter)]
    got = jax.jit(threefry_cpu.threefry2x32)(*words)
    assert [int(x) for x in got] == list(expected)


def test_hash_matches_jax_on_random_keys_and_counters():
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2**32, (2,), dtype=np.uint32)
    counter = rng.integers(0, 2**32, (2, 999), dtype=np.uint32)
    ours = jax.jit(threefry_cpu.threefry2x32)(*jnp.asarray(key), *jnp.asarray(counter))
    theirs = jax.extend.random.threefry_2x32(jnp.asarray(key), jnp.asarray(counter).reshape(-1))
    np.testing.assert_array_equal(np.concatenate([np.asarray(x) for x in ours]), np.asarray(theirs))


def test_inline_lowering_draws_what_jax_draws_and_compiles_no_loop():
    """The draws of a process that registers the lowering equal a process that does not (jax's own
    ``while``-loop lowering on CPU), bit for bit, vmapped and not; and the registered program has no loop."""
    runs = {
        mode: subprocess.run([sys.executable, "-c", DRAWS, mode], capture_output=True, text=True, check=True)
        for mode in ("jax", "inline")
    }
    jax_draws, inline_draws = (json.loads(runs[mode].stdout) for mode in ("jax", "inline"))
    assert inline_draws == jax_draws
    assert threefry_cpu.inline_threefry_on_cpu()
    compiled = jax.jit(lambda k: jax.random.randint(jax.random.fold_in(k, 3), (64,), 0, 9)).lower(jax.random.key(0))
    assert " while(" not in compiled.compile().as_text()


def test_evolopt_jit_registers_it(monkeypatch):
    """``xla_cpu.jit`` (meta-training's generation and evaluation steps) lowers the hash inline: it asks for
    the registration on every call (checked by a recorder, not by the flag an earlier test may have set)."""
    calls = []
    monkeypatch.setattr(threefry_cpu, "inline_threefry_on_cpu", lambda: calls.append(1) or True)
    xla_cpu.jit(lambda x: x)
    assert calls == [1]

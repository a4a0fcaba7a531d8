"""The blocked wide path (``fused.map_blocks`` / ``fused.wide_heads``, μLO's 32-unit MLP) equals
the same formula on the whole tensor, and the reference ``[*shape, 39]`` feature tensor."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evolopt.architectures import fused
from evolopt.architectures import small_fc_lopt as sfl


@pytest.mark.parametrize(
    "shape, size, blocks",
    [
        ((1000,), 64, 16),  # 1-D, ragged: the last block is shifted back
        ((37, 50), 120, 19),  # 2-D, 2 rows a block, ragged
        ((3, 3, 20, 30), 100, 63),  # conv kernel: 3 rows of 30, 7 a (3, 3) position, ragged
        ((2, 500), 128, 8),  # the last axis alone is larger than a block
        ((6, 4), 100, 1),  # smaller than a block: one call, no loop
    ],
)
def test_map_blocks_equals_whole_tensor(shape, size, blocks):
    """Full, broadcast (size-1 axes, including one that is the same for every block) and
    leading-axis leaves: every element written, with the whole tensor's values (up to the
    last bits of ``exp``, whose vectorised and scalar loops differ)."""
    plan = fused.block_plan(shape, size)
    n = 1 if plan is None else -(-shape[plan[0]] // plan[1]) * int(np.prod(shape[: plan[0]]))
    assert n == blocks
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    m = jnp.asarray(rng.standard_normal((3,) + shape), jnp.float32)  # leading axis, taken whole
    first = jnp.asarray(rng.standard_normal(shape[:1] + (1,) * (len(shape) - 1)), jnp.float32)
    last = jnp.asarray(rng.standard_normal((1,) * (len(shape) - 1) + shape[-1:]), jnp.float32)
    col = jnp.asarray(rng.standard_normal((2,) + (1,) * (len(shape) - 1) + shape[-1:]), jnp.float32)

    def fn(args):
        x, m, first, last, col = args
        return [x * m[1] + first - last * col[1], jnp.exp(x) + m[2]]

    args = (x, m, first, last, col)
    blocked = jax.jit(lambda a: fused.map_blocks(fn, shape, a, size))(args)
    whole = jax.jit(fn)(args)
    for b, w in zip(blocked, whole):
        assert b.shape == shape
        np.testing.assert_allclose(b, w, rtol=1e-6, atol=0)


def _accumulators(shape, seed):
    p = jax.random.normal(jax.random.key(seed), shape)
    g = jax.random.normal(jax.random.key(seed + 1), shape)
    acc = sfl.F.init_accumulators(p)
    for k in range(2):
        acc = sfl.F.update_accumulators(acc, g * (1.0 + k), sfl.MOMENTUM_DECAYS, sfl.RMS_DECAY, sfl.FACTORED_DECAYS)
    return p, g, acc


@pytest.mark.parametrize("shape", [(), (1000,), (37, 50), (50, 37), (3, 3, 20, 30), (6, 4)])
def test_wide_blocked_equals_unblocked_and_reference(shape, monkeypatch):
    """μLO's MLP (39 -> 32 -> 32 -> 2) on odd shapes: 1-D, 2-D with ragged last blocks (both
    orientations of the Adafactor row/column vectors), a conv kernel, a tensor smaller than a
    block and a scalar, with blocks of at most 120 elements; against the whole-tensor form
    (``fused.first_layer`` + ``fused.mlp_heads``, taken when the tensor fits in one block) and
    against the MLP on the materialised, normalised [*shape, 39] features."""
    theta = sfl.init_theta(jax.random.key(0), hidden_size=32)
    theta["mlp"] = jax.tree.map(lambda w: 2.0 * w + 0.05, theta["mlp"])  # nonzero biases
    p, g, acc = _accumulators(shape, 1)
    step = jnp.array(7)

    def run(block):
        monkeypatch.setattr(fused, "BLOCK", block)
        return np.asarray(jnp.stack(sfl._mlp_output(theta["mlp"], p, g, acc, step), axis=-1))

    plan = fused.block_plan(shape, 120)
    if len(shape) == 2 and np.prod(shape) > 120:  # 2 or 3 rows a block, the last one shifted back
        assert plan[0] == 0 and 1 < plan[1] and shape[0] % plan[1]
    blocked, whole = run(120), run(10**9)
    reference = sfl.F.apply_mlp(theta["mlp"], sfl._features(p, g, acc, step))
    scale = np.max(np.abs(whole))
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(blocked, reference, rtol=1e-5, atol=1e-6 * scale)


def test_wide_blocked_vmaps_over_theta(monkeypatch):
    """Meta-training vmaps the update over a population of thetas: the block loop batches."""
    from evolopt.registry import ARCHITECTURES

    monkeypatch.setattr(fused, "BLOCK", 120)
    lo = ARCHITECTURES.build("mulo")
    base = lo.init_theta(jax.random.key(0))
    thetas = jax.tree.map(lambda x: jnp.stack([x, 1.5 * x + 0.01]), base)
    params = {"w": jax.random.normal(jax.random.key(1), (37, 50)), "b": jnp.zeros(50)}
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), params)

    def update(theta):
        opt = lo.optimizer(theta)
        return opt.update(grads, opt.init(params), params, loss=jnp.float32(1.0), num_steps=10)[0]

    batched = jax.jit(jax.vmap(update))(thetas)
    for i in range(2):
        one = jax.jit(update)(jax.tree.map(lambda x: x[i], thetas))
        for k in params:
            np.testing.assert_allclose(batched[k][i], one[k], rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(one[k]))))


@pytest.mark.parametrize("backend, loops", [("cpu", 1), ("gpu", 0), ("tpu", 0)])
def test_block_size_follows_the_backend(backend, loops, monkeypatch):
    """On CPU μLO's update of a 300x300 kernel (90,000 elements) runs in 8192-element blocks, in
    a loop; on an accelerator, whose blocks are ``ACCELERATOR_BLOCK`` (2^20) elements, it is one
    block: no loop, where 8192-element blocks would be 11 sequential steps."""
    from evolopt.registry import ARCHITECTURES

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert fused.block_size() == {"cpu": fused.BLOCK}.get(backend, fused.ACCELERATOR_BLOCK)
    lo = ARCHITECTURES.build("mulo")
    opt = lo.optimizer(lo.init_theta(jax.random.key(0)))
    params = {"kernel": jnp.ones((300, 300))}
    jaxpr = str(jax.make_jaxpr(lambda g: opt.update(g, opt.init(params), params, loss=1.0, num_steps=10)[0])(params))
    assert jaxpr.count("scan[") + jaxpr.count("while[") == loops  # fori_loop: a scan


def test_stored_returns_its_input_through_a_loop_xla_keeps():
    """``fused.stored`` is the identity, batched or not, and its loop survives compilation (the loop is
    what stores ``x``); ``recomputes_mlp`` holds only for a traced theta on CPU."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 5))
    np.testing.assert_array_equal(jax.jit(fused.stored)(x), x)
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda r: fused.stored(jnp.sin(r))))(x), jnp.sin(x))
    assert " while(" in jax.jit(lambda r: fused.stored(jnp.sin(r)) * 2.0).lower(x).compile().as_text()
    theta = {"w": jnp.ones(3)}
    assert not fused.recomputes_mlp(theta)  # a constant: a user's optimizer
    seen = []
    jax.jit(lambda t: seen.append(fused.recomputes_mlp(t)))(theta)
    assert seen == [jax.default_backend() == "cpu"]


def _mlp_loops(arch: str, params: dict, store: bool, monkeypatch) -> list[int]:
    """Multiplies of each fused loop with an MLP's worth of them (> 200) in ``arch``'s update, theta
    traced (as meta-training compiles it), with ``fused.stored`` in use or not."""
    from evolopt.registry import ARCHITECTURES

    monkeypatch.setattr(fused, "recomputes_mlp", lambda theta: store)
    lopt = ARCHITECTURES.build(arch)
    theta = lopt.init_theta(jax.random.PRNGKey(0))

    def update(theta, params):
        tx = lopt.optimizer(theta)
        return tx.update(params, tx.init(params), params)[0]

    text = jax.jit(update).lower(theta, params).compile().as_text()
    return [c.count("multiply(") for c in text.split("\n\n") if c.count("multiply(") > 200]


@pytest.mark.parametrize("arch", ["celo2_base", "celo2_ns_input"])
def test_celo2_base_mlp_computed_once_with_theta_traced(arch, monkeypatch):
    """With theta traced XLA CPU fused a celo2 rule's whole MLP into both readers of its unit-RMS
    direction (the norm's reduction and the multiply): two MLP loops per tensor. ``fused.stored``
    leaves one. (celo2_ns_input sends the 1-D leaf to Adam: two tensors with an MLP.)"""
    if jax.default_backend() != "cpu":
        pytest.skip("the duplication and its remedy are XLA CPU's")
    params = {"w": jnp.ones((32, 10)), "v": jnp.ones((8, 24)), "b": jnp.ones((10,))}
    tensors = 3 if arch == "celo2_base" else 2
    assert len(_mlp_loops(arch, params, False, monkeypatch)) == 2 * tensors
    assert len(_mlp_loops(arch, params, True, monkeypatch)) == tensors


def test_stored_direction_differentiates_as_without_it(monkeypatch):
    """``evolopt.diagnose`` takes ``jax.grad`` through unrolls with theta traced, where celo2_base's direction
    goes through ``fused.stored`` (a while loop, which reverse mode cannot pass): its custom JVP makes the
    gradient w.r.t. theta the one computed without it."""
    from evolopt.registry import ARCHITECTURES

    lopt = ARCHITECTURES.build("celo2_base")
    theta = lopt.init_theta(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {"w": jax.random.normal(keys[0], (32, 10)), "b": jax.random.normal(keys[1], (10,))}
    grads = {"w": jax.random.normal(keys[2], (32, 10)), "b": jax.random.normal(keys[3], (10,))}

    def loss(theta):
        tx = lopt.optimizer(theta)
        updates = tx.update(grads, tx.init(params), params)[0]
        return sum(jnp.sum(jnp.sin(3.0 * u)) for u in jax.tree.leaves(updates))

    monkeypatch.setattr(fused, "recomputes_mlp", lambda theta: True)
    with_stored = jax.grad(loss)(theta)
    monkeypatch.setattr(fused, "recomputes_mlp", lambda theta: False)
    without = jax.grad(loss)(theta)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), with_stored, without)
    assert max(float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(without)) > 0.1  # not a vacuous comparison


@pytest.mark.parametrize("arch", ["celo2_base", "celo2_ns_input"])
def test_stored_and_transposed_directions_equal_the_constant_theta_updates(arch):
    """With theta traced (on CPU: directions stored, short-row tall tensors computed transposed, the
    NS5(m_0) channel of celo2_ns_input transposed with them) the updates over three steps equal those
    of the same theta as a constant (neither), for a tall short-row matrix, a wide one, a 3-D tensor and
    a bias."""
    from evolopt.registry import ARCHITECTURES

    lopt = ARCHITECTURES.build(arch)
    theta = jax.tree.map(lambda w: 3.0 * w + 0.1, lopt.init_theta(jax.random.PRNGKey(0)))
    shapes = {"tall": (24, 6), "wide": (6, 20), "odd3d": (4, 9, 5), "b": (7,)}
    keys = jax.random.split(jax.random.PRNGKey(1), len(shapes))
    params = {n: jax.random.normal(k, s) for (n, s), k in zip(shapes.items(), keys)}
    grads = [jax.tree.map(lambda p, i=i: jnp.cos(p * (i + 1.0)), params) for i in range(3)]

    def run(update):
        state, out = lopt.optimizer(theta).init(params), []
        for g in grads:
            u, state = update(g, state)
            out.append(u)
        return out

    with_traced = jax.jit(lambda th, g, s: lopt.optimizer(th).update(g, s, params))
    constant = jax.jit(lambda g, s: lopt.optimizer(theta).update(g, s, params))
    got = run(lambda g, s: with_traced(theta, g, s))
    want = run(constant)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((64, 32), (0, 1)),
        ((32, 10), (0, 1)),  # rows under 16 floats: reduced over the merged [320] axis
        ((3, 3, 2, 4), (0, 1, 2, 3)),  # merged twice, down to [3, 24]
        ((5, 32, 10), (1, 2)),  # a leading axis kept (per slice)
        ((6, 4), (1,)),  # short rows reduced alone: nothing to merge
        ((4, 6, 10), (0, 2)),  # the short axis's neighbour not reduced: nothing to merge
    ],
)
def test_mean_squares_matches_numpy(shape, axes):
    """``fused.mean_squares`` (one variadic reduce for every channel; short rows merged with their
    neighbour axis first) against numpy's float64 ``mean(x^2)`` over ``axes``, kept dims."""
    xs = [jax.random.normal(jax.random.PRNGKey(i), shape) * (i + 1) for i in range(3)]
    for got, x in zip(fused.mean_squares(xs, axes), xs):
        want = np.mean(np.asarray(x, np.float64) ** 2, axis=axes, keepdims=True)
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6)

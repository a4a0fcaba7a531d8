"""Celo2: against a naive float64 reference of the spec, invariances, checkpoints, routing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evolopt.architectures import celo2 as C
from evolopt.registry import ARCHITECTURES

SIZES = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
# matrix, tall matrix (NS transposes), conv kernel, 3-D with factored dims not last, 1-D, scalar
SHAPES = {"w": (6, 10), "tall": (12, 5), "conv": (3, 3, 4, 8), "odd3d": (8, 3, 2), "b": (7,), "s": ()}


# ------------------------------------------------------------- naive reference (spec, float64)


def _norm(x, axes):
    return x / np.sqrt(1e-9 + np.mean(x**2, axis=axes, keepdims=True))


class Reference:
    """Straight from shared/specs/celo2.md: full [*shape, 30] features, one MLP, NS, RMS."""

    def __init__(self, theta, orthogonalize, exp_mult=0.0):
        t = {k: np.asarray(v, np.float64) for k, v in theta["ff_mod_stack"]["~"].items()}
        self.t, self.ortho, self.exp_mult = t, orthogonalize, exp_mult

    def init(self, p):
        s = {"m": np.zeros(p.shape + (3,)), "v": np.zeros(p.shape)}
        if p.ndim >= 2:
            d1, d0 = np.argsort(p.shape)[-2:]
            s["row"] = np.zeros(np.delete(p.shape, d0).tolist() + [3])
            s["col"] = np.zeros(np.delete(p.shape, d1).tolist() + [3])
        else:
            s["vd"] = np.zeros(p.shape + (3,))
        return s

    def features(self, p, g, state):
        """Updates ``state`` in place; returns the normalised [*shape, C] feature tensor."""
        shape = p.shape
        p, g = np.asarray(p, np.float64).reshape(shape or (1,)), np.asarray(g, np.float64)
        g = np.clip(g.reshape(p.shape), -1000, 1000)
        s = {k: v.reshape(p.shape + (3,)) if k in ("m", "vd") else v for k, v in state.items()}
        s["v"] = s["v"].reshape(p.shape)
        b = np.array([0.9, 0.99, 0.999])
        s["m"] = b * s["m"] + (1 - b) * g[..., None]
        s["v"] = 0.95 * s["v"] + 0.05 * g**2
        m, v = s["m"], s["v"]
        rs = 1 / np.sqrt(v + 1e-8)
        feats = [g[..., None], np.clip(g, -0.1, 0.1)[..., None], p[..., None], m, v[..., None]]
        feats += [m * rs[..., None], rs[..., None]]
        if p.ndim >= 2:
            d1, d0 = np.argsort(p.shape)[-2:]
            g2 = g**2 + 1e-30
            s["row"] = b * s["row"] + (1 - b) * np.mean(g2, axis=d0)[..., None]
            s["col"] = b * s["col"] + (1 - b) * np.mean(g2, axis=d1)[..., None]
            rd1 = d1 - 1 if d1 > d0 else d1
            rmean = np.mean(s["row"], axis=rd1, keepdims=True)
            rf = np.expand_dims(1 / np.sqrt(np.maximum(s["row"] / (rmean + 1e-9), 1e-9)), d0)
            cf = np.expand_dims(1 / np.sqrt(np.maximum(s["col"], 1e-9)), d1)
            row = np.broadcast_to(np.expand_dims(s["row"], d0), p.shape + (3,))
            col = np.broadcast_to(np.expand_dims(s["col"], d1), p.shape + (3,))
            feats += [g[..., None] * rf * cf, (g * rs)[..., None], row, col]
            feats += [1 / np.sqrt(row + 1e-8), 1 / np.sqrt(col + 1e-8), m * rf * cf]
        else:
            s["vd"] = b * s["vd"] + (1 - b) * (g**2 + 1e-30)[..., None]
            fac = g[..., None] / np.sqrt(np.maximum(s["vd"] + 1e-9, 1e-9))
            feats += [fac, (g * rs)[..., None]]
        x = np.concatenate(feats, axis=-1)
        axes = tuple(range(max(p.ndim - 2, 0), p.ndim))
        for k in ("m", "vd"):
            if k in s:
                s[k] = s[k].reshape(shape + (3,))
        s["v"] = s["v"].reshape(shape)
        state.update(s)
        return _norm(x, axes)

    def step(self, p, g, s):
        x = self.features(p, g, s)
        t = self.t
        w0 = np.concatenate([t[f"w0__{i}"] for i in range(14)])[: x.shape[-1]]
        h = np.maximum(x @ w0 + t["b0"], 0)
        h = np.maximum(h @ t["w1"] + t["b1"], 0)
        o = h @ t["w2"] + t["b2"]
        d = o[..., 0] * np.exp(self.exp_mult * o[..., 1])
        if self.ortho and d.ndim >= 2:
            d = _ref_ns(d)
        axes = tuple(range(max(d.ndim - 2, 0), d.ndim))
        return _norm(d, axes).reshape(np.shape(p))


def _ref_ns(x):
    tr = x.shape[-2] > x.shape[-1]
    if tr:
        x = np.swapaxes(x, -1, -2)
    x = x / (np.sqrt(np.sum(x**2, axis=(-2, -1), keepdims=True)) + 1e-8)
    for _ in range(5):
        a = x @ np.swapaxes(x, -1, -2)
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return np.swapaxes(x, -1, -2) if tr else x


def _random_tree(key, scale=1.0):
    keys = jax.random.split(key, len(SHAPES))
    return {n: scale * jax.random.normal(k, s) for (n, s), k in zip(SHAPES.items(), keys)}


def _theta(seed=0, scale=3.0):
    # Larger-than-init weights so every feature visibly moves the output.
    th = C.init_theta(jax.random.PRNGKey(seed))
    return jax.tree.map(lambda w: w * scale + 0.1, th)


@functools.cache
def _jitted_update(orthogonalize):
    # theta is an argument, so one compilation serves every theta in these tests.
    def update(theta, g, state, params):
        tx = C.scale_by_celo2(theta, orthogonalize)
        return tx.update(g, state, params, loss=jnp.float32(1.0), num_steps=10)

    return jax.jit(update)


def _run(theta, orthogonalize, params, grads_seq):
    state = C.scale_by_celo2(theta, orthogonalize).init(params)
    out = []
    for g in grads_seq:
        u, state = _jitted_update(orthogonalize)(theta, g, state, params)
        out.append(u)
    return out


def _run_tx(tx, params, grads_seq):
    state, upd, out = tx.init(params), jax.jit(tx.update), []
    for g in grads_seq:
        u, state = upd(g, state, params, loss=jnp.float32(1.0), num_steps=10)
        out.append(u)
    return out


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("orthogonalize", [True, False])
def test_matches_naive_reference(orthogonalize):
    theta, params = _theta(), _random_tree(jax.random.PRNGKey(1))
    grads = [_random_tree(jax.random.PRNGKey(10 + i), 0.1 * (i + 1)) for i in range(3)]
    grads[1]["w"] = grads[1]["w"].at[0, 0].set(5000.0)  # exercises the +-1000 clip
    got = _run(theta, orthogonalize, params, grads)
    # "tall" and "odd3d" take the rule's transposed path (direction computed as the wide matrix)
    assert [n for n, s in SHAPES.items() if C.computed_wide(s, False)] == ["tall", "odd3d"]
    ref = Reference(theta, orthogonalize)
    states = {n: ref.init(np.asarray(p)) for n, p in params.items()}
    for step, g in zip(got, grads):
        for n in SHAPES:
            want = ref.step(np.asarray(params[n]), np.asarray(g[n]), states[n])
            np.testing.assert_allclose(step[n], want, atol=2e-4, rtol=1e-3, err_msg=n)


def test_directions_computed_transposed_only_for_tall_short_rows_on_cpu(monkeypatch):
    """``computed_wide``: tall slices with rows under 16 floats, orthogonalised slice by slice, on CPU."""
    assert C.computed_wide((32, 10), False) and C.computed_wide((3, 9, 4), False)
    assert not C.computed_wide((10, 32), False)  # wide already
    assert not C.computed_wide((2048, 512), False)  # rows long enough to vectorise: transposed reads cost more
    assert not C.computed_wide((32, 16), False) and not C.computed_wide((10,), False)
    assert not C.computed_wide((3, 9, 4), True)  # conv_as_matrix: one [27, 4] matrix, reshaped, not per slice
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not C.computed_wide((32, 10), False)  # measured on CPU only


@pytest.mark.parametrize("shape", [(6, 10), (12, 5), (3, 3, 4, 8), (2, 7, 7)])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_newton_schulz_matches_the_textbook_iteration(shape, scale):
    """``newton_schulz`` takes its first step on the unscaled input (norm from the Gram's trace);
    it must equal normalising first, then 5 steps (float64 ``_ref_ns``), at any input scale."""
    x = scale * np.asarray(jax.random.normal(jax.random.PRNGKey(4), shape), np.float64)
    got = jax.jit(C.newton_schulz)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, _ref_ns(x), atol=2e-5, rtol=1e-4)


def test_unit_rms_and_ns_spectrum():
    theta, params = _theta(), _random_tree(jax.random.PRNGKey(2))
    g = _random_tree(jax.random.PRNGKey(3))
    (ortho,) = _run(theta, True, params, [g])
    (base,) = _run(theta, False, params, [g])
    for step in (ortho, base):
        for x in step.values():
            axes = tuple(range(max(x.ndim - 2, 0), x.ndim))
            np.testing.assert_allclose(np.sqrt(np.mean(np.square(x), axis=axes)), 1.0, rtol=1e-4)
    for n in ("w", "tall", "conv"):
        sv_o = np.linalg.svd(np.asarray(ortho[n]), compute_uv=False)
        sv_b = np.linalg.svd(np.asarray(base[n]), compute_uv=False)
        # 5 quintic NS steps map singular values into ~[0.7, 1.2]: ratio < 1.8.
        assert np.all(sv_o.max(-1) / sv_o.min(-1) < 1.8), n
        assert np.any(sv_b.max(-1) / sv_b.min(-1) > 2.0), n  # the raw MLP output is not flat


def test_normalisation_is_per_slice_scale_invariant():
    # p enters only as feature block 2, normalised over the last two axes: rescaling
    # p by any positive constant per leading index must not change the step.
    theta, params = _theta(), _random_tree(jax.random.PRNGKey(4))
    g = _random_tree(jax.random.PRNGKey(5))
    scaled = dict(params)
    scaled["w"] = params["w"] * 37.0
    scaled["conv"] = params["conv"] * jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    scaled["b"] = params["b"] * 0.01
    for ortho in (True, False):
        (a,), (b,) = _run(theta, ortho, params, [g]), _run(theta, ortho, scaled, [g])
        for n in ("w", "conv", "b"):
            np.testing.assert_allclose(a[n], b[n], atol=1e-4, err_msg=n)
    # The gradient is not scale-free (clip(g) and the 1e-8 in rsqrt(v + 1e-8)).
    (c,) = _run(theta, False, params, [jax.tree.map(lambda x: 2 * x, g)])
    assert not np.allclose(a["w"], c["w"], atol=1e-3)


def _one_channel_theta(block, channel):
    """theta whose MLP output (direction) equals normalised input channel (block, channel)."""
    leaf = C.init_theta(jax.random.PRNGKey(0))["ff_mod_stack"]["~"]
    leaf = {k: jnp.zeros_like(v) for k, v in leaf.items()}
    leaf[f"w0__{block}"] = leaf[f"w0__{block}"].at[channel, 0].set(1.0).at[channel, 1].set(-1.0)
    leaf["w1"] = jnp.eye(8)
    leaf["w2"] = leaf["w2"].at[0, 0].set(1.0).at[1, 0].set(-1.0)  # relu(x) - relu(-x) = x
    return {"ff_mod_stack": {"~": leaf}}


def test_feature_order_each_block_selects_its_feature():
    params = _random_tree(jax.random.PRNGKey(6))
    grads = [_random_tree(jax.random.PRNGKey(20 + i), 0.05 * (i + 1)) for i in range(2)]
    ref = Reference(_theta(), False)
    states = {n: ref.init(np.asarray(p)) for n, p in params.items()}
    for g in grads:
        feats = {n: ref.features(np.asarray(p), np.asarray(g[n]), states[n]) for n, p in params.items()}
    offsets = np.cumsum((0,) + SIZES)
    for block, size in enumerate(SIZES):
        for ch in range(size):
            got = _run(_one_channel_theta(block, ch), False, params, grads)[-1]
            for n in SHAPES:
                x = feats[n]
                if x.shape[-1] <= offsets[block]:  # blocks 9..13 do not exist for ndim < 2
                    np.testing.assert_array_equal(got[n], 0.0)
                    continue
                # The step is the selected normalised channel, RMS-normalised once more.
                axes = tuple(range(max(x.ndim - 3, 0), x.ndim - 1))
                want = _norm(x[..., offsets[block] + ch], axes).reshape(np.shape(params[n]))
                np.testing.assert_allclose(got[n], want, atol=2e-4, err_msg=f"{block}/{ch}/{n}")
    # Concretely: with only w0__2, the step is p / rms(p), so it follows the sign of p.
    (step,) = _run(_one_channel_theta(2, 0), False, params, grads[:1])
    np.testing.assert_array_equal(np.sign(step["w"]), np.sign(params["w"]))


def test_checkpoint_roundtrip_and_flax_interop(tmp_path):
    from flax import serialization

    theta = _theta(7)
    path = tmp_path / "theta.state"
    C.save_theta(theta, str(path))
    back = C.load_theta(str(path))
    jax.tree.map(np.testing.assert_array_equal, back, theta)
    template = jax.tree.map(jnp.zeros_like, theta)
    from_flax = serialization.from_bytes(template, path.read_bytes())
    jax.tree.map(np.testing.assert_array_equal, from_flax, theta)
    flax_path = tmp_path / "flax.state"
    flax_path.write_bytes(serialization.to_bytes(jax.tree.map(np.asarray, _theta(8))))
    jax.tree.map(np.testing.assert_array_equal, C.load_theta(str(flax_path)), _theta(8))


def test_checkpoint_errors(tmp_path):
    from flax import serialization

    good = tmp_path / "good.state"
    C.save_theta(_theta(), str(good))
    bad = tmp_path / "trunc.state"
    bad.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(ValueError, match="trunc.state"):
        C.load_theta(str(bad))
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="trunc.state"):
        C.load_theta(str(bad))
    leaf = dict(jax.tree.map(np.asarray, _theta())["ff_mod_stack"]["~"])
    cases = [
        ({"w0__5": None}, "missing key 'ff_mod_stack/~/w0__5'"),
        ({"w1": np.zeros((8, 7), np.float32)}, "w1' has shape"),
        ({"extra": np.zeros(3, np.float32)}, "unexpected key 'ff_mod_stack/~/extra'"),
    ]
    for change, msg in cases:
        d = {**leaf, **change}
        d = {k: v for k, v in d.items() if v is not None}
        bad.write_bytes(serialization.to_bytes({"ff_mod_stack": {"~": d}}))
        with pytest.raises(ValueError, match=msg):
            C.load_theta(str(bad))
    bad.write_bytes(serialization.to_bytes({"params": leaf}))
    with pytest.raises(ValueError, match="ff_mod_stack"):
        C.load_theta(str(bad))


def test_full_optimizer_adam_routing_and_weight_decay():
    from flax import linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Embed(10, 6)(x)
            x = nn.LayerNorm()(nn.Dense(5)(x))
            return nn.Dense(3)(x)

    params = Net().init(jax.random.PRNGKey(0), jnp.zeros((2,), jnp.int32))["params"]
    labels = C.adam_labels(params, C.DEFAULT_PARAM_REGEX)
    assert labels["Dense_0"] == {"kernel": "celo2", "bias": "adam"}
    assert labels["Embed_0"]["embedding"] == "adam"
    assert labels["LayerNorm_0"] == {"scale": "adam", "bias": "adam"}
    assert C.adam_labels(params, "", route_1d_to_adam=False)["LayerNorm_0"]["scale"] == "celo2"

    lr, wd = 1e-2, 0.5
    g1 = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
    g2 = jax.tree.map(lambda p: jnp.full_like(p, -0.2), params)
    theta = _theta()
    with_wd = _run_tx(C.celo2(theta, learning_rate=lr, weight_decay=wd), params, [g1, g2])[-1]
    no_wd = _run_tx(C.celo2(theta, learning_rate=lr), params, [g1, g2])[-1]
    # Adam without bias correction, eps inside the root, at 20 lr.
    m = 0.9 * 0.1 * 0.3 + 0.1 * -0.2
    v = 0.999 * 0.001 * 0.09 + 0.001 * 0.04
    want_bias = -20 * lr * m / np.sqrt(v + 1e-8)
    np.testing.assert_allclose(no_wd["Dense_0"]["bias"], want_bias, rtol=1e-5)
    # Decoupled decay: -wd lr p for the learned rule, -wd 20 lr p for Adam.
    k, b = params["Dense_1"]["kernel"], params["Dense_1"]["bias"]
    dk = with_wd["Dense_1"]["kernel"] - no_wd["Dense_1"]["kernel"]
    db = with_wd["Dense_1"]["bias"] - no_wd["Dense_1"]["bias"]
    np.testing.assert_allclose(dk, -wd * lr * k, atol=1e-7)
    np.testing.assert_allclose(db, -wd * 20 * lr * b, atol=1e-7)
    # The learned step is subtracted with RMS exactly lr.
    ref = Reference(theta, True)
    kernel = params["Dense_1"]["kernel"]
    st = ref.init(np.asarray(kernel))
    for g in (g1, g2):
        want = -lr * ref.step(np.asarray(kernel), np.asarray(g["Dense_1"]["kernel"]), st)
    np.testing.assert_allclose(no_wd["Dense_1"]["kernel"], want, atol=1e-6)


def test_registered_archs_jit_and_vmap_over_theta():
    params = {"w": jnp.ones((6, 4)) * 0.1, "b": jnp.zeros(4), "s": jnp.ones(())}
    grads = jax.tree.map(lambda p: jnp.linspace(-1, 1, p.size).reshape(p.shape), params)
    for name in ("celo2", "celo2_base"):
        arch = ARCHITECTURES.build(name, learning_rate=1e-2)
        thetas = jax.vmap(arch.init_theta)(jax.random.split(jax.random.PRNGKey(0), 3))

        def run(theta, arch=arch):
            tx = arch.optimizer(theta)
            u, s = tx.update(grads, tx.init(params), params, loss=jnp.float32(1.0), num_steps=5)
            return tx.update(grads, s, params, loss=jnp.float32(1.0), num_steps=5)[0]

        batched, single_fn = jax.jit(jax.vmap(run))(thetas), jax.jit(run)
        for i in range(3):
            single = single_fn(jax.tree.map(lambda t: t[i], thetas))
            close = functools.partial(np.testing.assert_allclose, atol=1e-6)
            jax.tree.map(lambda a, b: close(a[i], b), batched, single)
    # celo2_base uses the learned rule on every leaf, celo2 sends b and s to Adam.
    assert ARCHITECTURES.build("celo2_base").hparams["route_1d_to_adam"] is False


def test_conv_as_matrix_orthogonalises_the_flattened_kernel():
    """``conv_as_matrix``: the step of a conv kernel [kh, kw, cin, cout] is NS5 of the MLP's
    direction reshaped to one [kh*kw*cin, cout] matrix (the float64 reference's direction,
    an independent reshape + Newton-Schulz), with unit RMS over the whole kernel; matrices
    are unchanged, and the default stays per tap."""
    theta, params = _theta(), _random_tree(jax.random.PRNGKey(7))
    grads = [_random_tree(jax.random.PRNGKey(30 + i), 0.1) for i in range(2)]
    flat = _run_tx(C.scale_by_celo2(theta, True, conv_as_matrix=True), params, grads)
    per_tap = _run(theta, True, params, grads)
    base = Reference(theta, False)  # directions before orthogonalisation
    states = {n: base.init(np.asarray(p)) for n, p in params.items()}
    for i, g in enumerate(grads):
        for n in ("w", "conv", "odd3d"):
            x = base.features(np.asarray(params[n]), np.asarray(g[n]), states[n])
            t = base.t
            w0 = np.concatenate([t[f"w0__{j}"] for j in range(14)])
            h = np.maximum(np.maximum(x @ w0 + t["b0"], 0) @ t["w1"] + t["b1"], 0)
            d = (h @ t["w2"] + t["b2"])[..., 0]
            want = _ref_ns(d.reshape(-1, d.shape[-1])).reshape(d.shape)
            want = want / np.sqrt(1e-9 + np.mean(want**2))
            np.testing.assert_allclose(flat[i][n], want, atol=2e-4, rtol=1e-3, err_msg=n)
    np.testing.assert_allclose(flat[-1]["w"], per_tap[-1]["w"], atol=1e-5)
    sv_flat = np.linalg.svd(np.asarray(flat[-1]["conv"]).reshape(-1, 8), compute_uv=False)
    sv_tap = np.linalg.svd(np.asarray(per_tap[-1]["conv"]).reshape(-1, 8), compute_uv=False)
    assert sv_flat.max() / sv_flat.min() < 1.8
    assert sv_tap.max() / sv_tap.min() > 2.0  # per-tap steps are not orthogonal as one matrix
    assert ARCHITECTURES.build("celo2", conv_as_matrix=True).hparams["conv_as_matrix"] is True

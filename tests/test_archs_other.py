"""Tests for the adam_hparams, celo, mulo and small_fc_lopt architectures.

References are independent: optax.adam and a float64 NumPy Adam; closed forms of
the step for hand-built thetas; a NumPy re-statement of Celo's loss EMAs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evolopt.architectures import adam_hparams as ah
from evolopt.architectures import celo as celo_mod
from evolopt.architectures import features as F
from evolopt.architectures import mulo as mulo_mod
from evolopt.architectures import small_fc_lopt as sfl
from evolopt.registry import ARCHITECTURES, ConfigError

KEY = jax.random.PRNGKey(0)
OWN_ARCHS = ["adam_hparams", "celo", "mulo", "small_fc_lopt"]


def make_params() -> dict:
    """0-d, 1-d, 2-d and 4-d leaves with distinct, nonzero values."""
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    return {
        "scalar": jnp.asarray(0.7),
        "vec": jax.random.normal(ks[0], (5,)),
        "mat": jax.random.normal(ks[1], (4, 6)),
        "conv": 0.1 * jax.random.normal(ks[2], (3, 3, 2, 4)),
    }


def make_grads(seed: int) -> dict:
    params = make_params()
    ks = jax.random.split(jax.random.PRNGKey(100 + seed), len(params))
    return {k: jax.random.normal(kk, v.shape) for kk, (k, v) in zip(ks, params.items())}


@functools.cache
def initial_theta(name: str):
    """One theta per arch for the whole module: initialisers are slow to compile."""
    return ARCHITECTURES.build(name).init_theta(KEY)


def zeros_theta(init_fn, **kwargs) -> dict:
    """A zero theta with init_fn's structure, built from shapes only (no compile)."""
    shapes = jax.eval_shape(functools.partial(init_fn, **kwargs), KEY)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def close(a, b, rtol=1e-5, atol=1e-7):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ adam_hparams


def test_adam_hparams_init_decodes_to_defaults():
    hp = ah.decode(ARCHITECTURES.build("adam_hparams").init_theta(KEY))
    close(hp["learning_rate"], 1e-3)
    close(hp["b1"], 0.9)
    close(hp["b2"], 0.999)
    close(hp["eps"], 1e-8)


def test_adam_hparams_matches_optax_adam_and_closed_form():
    lr, b1, b2, eps = 3e-2, 0.8, 0.99, 1e-3
    lo = ARCHITECTURES.build("adam_hparams", init_learning_rate=lr, init_b1=b1, init_b2=b2, init_eps=eps)
    ours, ref = lo.optimizer(lo.init_theta(KEY)), optax.adam(lr, b1, b2, eps)
    params = make_params()
    s_ours, s_ref = ours.init(params), ref.init(params)
    m = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    v = {k: np.zeros(np.shape(x)) for k, x in params.items()}
    for t in range(1, 4):
        g = make_grads(t)
        u_ours, s_ours = ours.update(g, s_ours, params, loss=jnp.asarray(1.0), num_steps=jnp.asarray(9))
        u_ref, s_ref = ref.update(g, s_ref, params)
        for k in params:
            gk = np.asarray(g[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            closed = -lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            close(u_ours[k], u_ref[k], rtol=1e-5)
            close(u_ours[k], closed, rtol=1e-4, atol=1e-8)


def test_adam_hparams_saturated_beta_stays_finite():
    theta = {**ah.init_theta(KEY), "logit_b2": jnp.asarray(200.0)}
    opt = ah.adam_hparams_optimizer(theta)
    params = make_params()
    u, _ = opt.update(make_grads(0), opt.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
    with pytest.raises(ConfigError):
        ARCHITECTURES.build("adam_hparams", init_b1=1.0)


# ------------------------------------------------------------------ small_fc_lopt


@pytest.mark.parametrize("shape", [(), (5,), (4, 6), (3, 3, 2, 4)])
def test_small_fc_lopt_has_39_features(shape):
    p = jnp.ones(shape)
    acc = sfl.F.update_accumulators(
        sfl.F.init_accumulators(p), p, sfl.MOMENTUM_DECAYS, sfl.RMS_DECAY, sfl.FACTORED_DECAYS
    )
    assert sfl.NUM_INPUTS == 39
    assert sfl._features(p, p, acc, jnp.asarray(0)).shape == shape + (39,)


def test_small_fc_lopt_param_count():
    theta = zeros_theta(ARCHITECTURES.build("small_fc_lopt").init_theta)
    assert sum(x.size for x in jax.tree.leaves(theta)) == 197
    assert sum(x.size for x in jax.tree.leaves(theta["decays"])) == 7
    assert [theta["mlp"][f"w{i}"].shape for i in range(3)] == [(39, 4), (4, 4), (4, 2)]


def sfl_theta(hidden: int = 4) -> dict:
    return zeros_theta(sfl.init_theta, hidden_size=hidden, hidden_layers=2)


def test_small_fc_lopt_closed_form_constant_output():
    d, m, lr = 0.37, -250.0, 2e-3
    theta = sfl_theta()
    theta["mlp"]["b2"] = jnp.array([d, m])
    opt = sfl.small_fc_lopt_optimizer(theta, learning_rate=lr)
    params = make_params()
    state = opt.init(params)
    for t in range(2):
        u, state = opt.update(make_grads(t), state, params)
        for k in params:
            close(u[k], np.full(np.shape(params[k]), -lr * d * math.exp(1e-3 * m)))


def test_small_fc_lopt_closed_form_normalised_gradient_and_time():
    # d = 10 + g / rms(g) - 10 (channel 0); then d = 1 + tanh(t - 1) (first time feature).
    theta = sfl_theta()
    mlp = theta["mlp"]
    mlp["w0"] = mlp["w0"].at[0, 0].set(1.0)
    mlp["b0"] = mlp["b0"].at[0].set(10.0)
    mlp["w1"] = mlp["w1"].at[0, 0].set(1.0)
    mlp["w2"] = mlp["w2"].at[0, 0].set(1.0)
    mlp["b2"] = jnp.array([-10.0, 0.0])
    opt = sfl.small_fc_lopt_optimizer(theta, learning_rate=1.0, exp_mult=0.0)
    params, g = make_params(), make_grads(0)
    u, _ = opt.update(g, opt.init(params), params)
    for k in params:
        gk = np.asarray(g[k], np.float64)
        close(u[k], -gk / np.sqrt(1e-5 + np.mean(gk**2)), atol=2e-5)

    mlp["w0"] = jnp.zeros_like(mlp["w0"]).at[28, 0].set(1.0)  # tanh(t / 1 - 1)
    mlp["b0"] = jnp.zeros_like(mlp["b0"]).at[0].set(1.0)
    mlp["b2"] = jnp.zeros(2)
    opt = sfl.small_fc_lopt_optimizer(theta, learning_rate=1.0, exp_mult=0.0)
    state = opt.init(params)
    for t in range(3):
        u, state = opt.update(g, state, params)
        close(u["mat"], np.full((4, 6), -(1.0 + math.tanh(t - 1.0))))


def test_nan_to_num_is_jnp_nan_to_num():
    # features.nan_to_num is jnp.nan_to_num's map in a form XLA fuses into its readers: the same bits
    # (NaN -> 0, +-inf -> +-largest float, signed zeros and normal floats kept), jitted or not. A
    # subnormal comes out as zero on XLA CPU (its clip treats subnormal inputs as zero,
    # as every arithmetic reader of a gradient does there anyway).
    big = float(np.finfo(np.float32).max)
    x = jnp.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.5, big, -big, 1e-30, -1e-37], jnp.float32)
    want = np.asarray(jnp.nan_to_num(x)).view(np.uint32)
    for fn in (F.nan_to_num, jax.jit(F.nan_to_num)):
        np.testing.assert_array_equal(np.asarray(fn(x)).view(np.uint32), want)
        np.testing.assert_array_equal(np.asarray(fn(jnp.array([1e-45, -1e-39], jnp.float32))), [0.0, -0.0])


def test_small_fc_lopt_reads_non_finite_grads_as_nan_to_num_does():
    # The update and state from grads holding NaN and +-inf equal those from jnp.nan_to_num's grads
    # (an inf becomes the largest float, whose square overflows: the rule's own NaNs, as the reference's).
    opt = sfl.small_fc_lopt_optimizer(initial_theta("small_fc_lopt"))
    params = make_params()
    state = opt.init(params)
    grads = make_grads(0)
    grads["mat"] = grads["mat"].at[0, 0].set(jnp.nan).at[1, 2].set(jnp.inf).at[3, 5].set(-jnp.inf)
    grads["vec"] = grads["vec"].at[4].set(jnp.nan)
    grads["scalar"] = jnp.asarray(jnp.inf)
    u, new_state = opt.update(grads, state, params)
    want_u, want_state = opt.update(jax.tree.map(jnp.nan_to_num, grads), state, params)
    for got, want in zip(jax.tree.leaves((u, new_state)), jax.tree.leaves((want_u, want_state))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ------------------------------------------------------------------ celo


def celo_theta() -> dict:
    return zeros_theta(celo_mod.init_theta)


def rms(p) -> float:
    return math.sqrt(float(np.mean(np.asarray(p, np.float64) ** 2)) + 1e-9)


def test_celo_param_counts():
    theta = zeros_theta(ARCHITECTURES.build("celo").init_theta)
    assert sum(x.size for x in jax.tree.leaves(theta["mlp"])) == 159
    assert theta["mlp"]["w0"].shape == (30, 4)
    assert theta["scheduler"]["lstm"]["w0"].shape == (128, 256)
    assert theta["scheduler"]["init_h"].shape == (64,)


def test_celo_closed_form_constant_output():
    d, m = -0.8, 300.0
    theta = celo_theta()
    theta["mlp"]["b2"] = jnp.array([d, m, 5.0])
    opt = celo_mod.celo_optimizer(theta, scheduler="none")
    params = make_params()
    state = opt.init(params)
    for t in range(2):
        u, state = opt.update(make_grads(t), state, params, loss=jnp.asarray(1.0))
        for k in params:
            close(u[k], np.full(np.shape(params[k]), -d * math.exp(1e-3 * m) * 1e-3 * rms(params[k])))


@pytest.mark.parametrize("channel", [0, 1, 2, 14])
def test_celo_feature_channels(channel):
    # d = 10 + x / rms(x) - 10 for one input channel x: pins the order of Celo's features.
    theta = celo_theta()
    mlp = theta["mlp"]
    mlp["w0"] = mlp["w0"].at[channel, 0].set(1.0)
    mlp["b0"] = mlp["b0"].at[0].set(10.0)
    mlp["w1"] = mlp["w1"].at[0, 0].set(1.0)
    mlp["w2"] = mlp["w2"].at[0, 0].set(1.0)
    mlp["b2"] = jnp.array([-10.0, 0.0, 0.0])
    opt = celo_mod.celo_optimizer(theta, learning_rate=1.0, exp_mult=0.0, scheduler="none")
    params = make_params()
    g = jax.tree.map(lambda x: 0.3 * x, make_grads(0))  # some entries beyond the 0.1 clip
    u, _ = opt.update(g, opt.init(params), params)
    for k in params:
        gk, pk = np.asarray(g[k], np.float64), np.asarray(params[k], np.float64)
        x = {
            0: gk,
            1: np.clip(gk, -0.1, 0.1),
            2: pk,
            14: gk / np.sqrt((1 - 0.999) * gk**2 + 1e-6),  # v after one step
        }[channel]
        close(u[k], -(x / np.sqrt(1e-5 + np.mean(x**2))) * rms(pk), rtol=1e-4, atol=2e-5 * rms(pk))


def lstm_ref(x_to_gate: float, bias: tuple, c0: float) -> tuple[float, float]:
    """One haiku LSTM unit with no recurrent weight: gates (i, g, f, o) = bias (+ x on g)."""
    bi, bg, bf, bo = bias
    c = sigmoid(bf + 1.0) * c0 + sigmoid(bi) * math.tanh(bg + x_to_gate)
    return sigmoid(bo) * math.tanh(c), c


def test_celo_scheduler_on_vs_off_is_eta():
    # All scheduler weights zero: eta_t = 0.1 exp(0.5 sum h_t - 0.3), h_t from bias-only gates.
    theta = celo_theta()
    theta["mlp"]["b2"] = jnp.array([0.5, 0.0, 0.0])
    sched, h = theta["scheduler"], 64
    bias = (0.4, -0.7, 0.2, 1.1)
    sched["lstm"]["b0"] = jnp.repeat(jnp.array(bias), h)
    sched["init_c"] = jnp.full((h,), 0.6)
    sched["init_h"] = jnp.full((h,), -0.9)
    sched["eta"]["w0"] = jnp.full((h, 1), 0.5)
    sched["eta"]["b0"] = jnp.array([-0.3])
    on = celo_mod.celo_optimizer(theta, scheduler="learned")
    off = celo_mod.celo_optimizer(theta, scheduler="none")
    params = make_params()
    s_on, s_off = on.init(params), off.init(params)
    assert "lstm" not in s_off
    c = 0.6
    for t in range(3):
        g = make_grads(t)
        u_on, s_on = on.update(g, s_on, params, loss=jnp.asarray(2.0 - t), num_steps=jnp.asarray(10))
        u_off, s_off = off.update(g, s_off, params, loss=jnp.asarray(2.0 - t), num_steps=jnp.asarray(10))
        hh, c = lstm_ref(0.0, bias, c)
        eta = 0.1 * math.exp(0.5 * h * hh - 0.3)
        for k in params:
            close(u_off[k], np.full(np.shape(params[k]), -0.5e-3 * rms(params[k])))
            close(u_on[k], np.asarray(u_off[k]) * eta, rtol=2e-5)


def ref_loss_features(losses: list[float], num_steps: int) -> list[np.ndarray]:
    """Celo's loss features, restated in float64 NumPy."""
    b = np.exp(-1.0 / 10 ** np.linspace(1.0, np.log10(num_steps), 10))
    e, rmin, out = np.zeros(10), np.full(10, 1e12), []
    for i, loss in enumerate(losses):
        if i > 0:
            loss = min(2 * abs(np.max(e / (1 - b ** (i + 1)))), loss)
        e = b * e + (1 - b) * loss
        ehat = e / (1 - b ** (i + 1))
        rmin = np.minimum(rmin, ehat)
        f = np.clip((ehat[:-1] - rmin[:-1]) / np.maximum(1e-8, ehat[1:] - rmin[:-1]) - 1, -1, 1)
        out.append(np.zeros(9) if i + 1 <= 2 else f)
    return out


def test_celo_fraction_left_and_decays():
    s = [0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1]
    close(celo_mod.fraction_left_features(jnp.asarray(5), jnp.asarray(10)), [math.tanh(10 * (0.5 - x)) for x in s])
    close(celo_mod.fraction_left_features(0, 100), [math.tanh(-10 * x) for x in s])
    halflife = [10 ** (1 + 2 * k / 9) for k in range(10)]
    close(celo_mod.loss_decays(jnp.asarray(1000)), [math.exp(-1 / h) for h in halflife], rtol=1e-6)


def test_celo_loss_features():
    decays = celo_mod.loss_decays(100)
    buf = celo_mod.init_loss_buffer()
    for i in range(5):  # falling loss: every EMA is its running min, so (0 / den) - 1
        buf = celo_mod.update_loss_buffer(buf, jnp.asarray(10.0 - i), decays)
        close(celo_mod.loss_features(buf, decays), np.zeros(9) if i < 2 else -np.ones(9))

    # A spike right after the first loss is clipped to 2 max_k (1-b_k)/(1-b_k^2) = 2/(1+b_min).
    buf = celo_mod.init_loss_buffer()
    buf = celo_mod.update_loss_buffer(buf, jnp.asarray(1.0), decays)
    buf = celo_mod.update_loss_buffer(buf, jnp.asarray(100.0), decays)
    b0 = math.exp(-0.1)
    close(buf["means"][0], b0 * (1 - b0) + (1 - b0) * 2 / (1 + b0), rtol=1e-6)

    losses = [3.0, 2.5, 50.0, 2.0, 1.8, 1.9, 1.5, 1.2, 1.3, 1.0, 0.9, 0.95]
    buf = celo_mod.init_loss_buffer()
    for loss, ref in zip(losses, ref_loss_features(losses, 100)):
        buf = celo_mod.update_loss_buffer(buf, jnp.asarray(loss), decays)
        close(celo_mod.loss_features(buf, decays), ref, rtol=1e-4, atol=1e-4)


def test_celo_scheduler_inputs_reach_eta():
    # x'_0 = fraction feature 0 (linear path), x'_1 = relu(-loss feature 0) (relu path);
    # each feeds the cell gate of one LSTM unit, and eta reads those two units.
    T, h = 50, 64
    theta = celo_theta()
    theta["mlp"]["b2"] = jnp.array([1.0, 0.0, 0.0])
    sched = theta["scheduler"]
    sched["mix_linear"]["w0"] = sched["mix_linear"]["w0"].at[0, 0].set(1.0)
    sched["mix_relu"]["w0"] = sched["mix_relu"]["w0"].at[9, 1].set(-1.0)
    sched["lstm"]["w0"] = sched["lstm"]["w0"].at[0, h].set(1.0).at[1, h + 1].set(2.0)
    sched["eta"]["w0"] = sched["eta"]["w0"].at[0, 0].set(1.0).at[1, 0].set(-1.5)
    opt = celo_mod.celo_optimizer(theta, learning_rate=1.0)
    params = make_params()
    state = opt.init(params)
    losses = [4.0, 3.0, 2.5, 2.6, 2.0, 1.0]
    c0 = c1 = 0.0
    zero = (0.0, 0.0, 0.0, 0.0)
    for t, (loss, lf) in enumerate(zip(losses, ref_loss_features(losses, T))):
        u, state = opt.update(make_grads(t), state, params, loss=jnp.asarray(loss), num_steps=jnp.asarray(T))
        h0, c0 = lstm_ref(math.tanh(10 * (t / T - 0.03)), zero, c0)
        h1, c1 = lstm_ref(2.0 * max(0.0, -lf[0]), zero, c1)
        eta = 0.1 * math.exp(h0 - 1.5 * h1)
        close(u["mat"], np.full((4, 6), -eta * rms(params["mat"])), rtol=5e-5)
    assert abs(float(lf[0])) > 0.05  # the loss path was exercised


def test_celo_fallbacks_without_extra_args():
    theta = celo_theta()
    theta["mlp"]["b2"] = jnp.array([1.0, 0.0, 0.0])
    opt = celo_mod.celo_optimizer(theta, num_steps=20)
    params = make_params()
    u, state = opt.update(make_grads(0), opt.init(params), params)  # no loss, no num_steps
    # zero weights: eta = 0.1 exp(0) regardless of inputs
    close(u["vec"], np.full(5, -0.1 * 1e-3 * rms(params["vec"])))
    assert int(state["loss_buffer"]["iteration"]) == 0
    with pytest.raises(ConfigError):
        ARCHITECTURES.build("celo", scheduler="phase1")


# ------------------------------------------------------------------ mulo


def test_mulo_sizes():
    lo = ARCHITECTURES.build("mulo")
    theta = zeros_theta(lo.init_theta)
    assert sum(x.size for x in jax.tree.leaves(theta["mlp"])) == 2402
    assert sum(x.size for x in jax.tree.leaves(theta["decays"])) == 7
    assert lo.hparams["learning_rate"] == 0.01


def test_mulo_multipliers_scale_step_per_tensor():
    theta = initial_theta("mulo")
    params, g = make_params(), make_grads(0)
    scales = {"scalar": 1.0, "vec": 0.5, "mat": 1 / 6, "conv": 0.125}
    base = sfl.small_fc_lopt_optimizer(theta, learning_rate=0.01)
    u_base, _ = base.update(g, base.init(params), params)
    for spec in (scales, lambda path, shape: scales[path[-1]]):
        opt = mulo_mod.mulo_optimizer(theta, mup_multipliers=spec)
        u, _ = opt.update(g, opt.init(params), params)
        for k in params:
            assert float(jnp.max(jnp.abs(u_base[k]))) > 0
            close(u[k], np.asarray(u_base[k]) * scales[k], rtol=1e-6, atol=0)
    opt = mulo_mod.mulo_optimizer(theta, mup_multipliers="none")
    u, _ = opt.update(g, opt.init(params), params)
    for k in params:
        close(u[k], u_base[k], rtol=1e-6, atol=0)


def test_mulo_default_heuristic():
    tree = {
        "params": {
            f"Dense_{i}": {"kernel": np.zeros(s), "bias": np.zeros(s[-1])}
            for i, s in [(0, (6, 8)), (1, (8, 16)), (2, (3, 3, 16, 32)), (10, (32, 3))]
        }
    }
    got = dict(
        zip(
            [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]],
            mulo_mod.mup_multipliers_for(tree),
        )
    )
    expect = {0: 1.0, 1: 1 / 8, 2: 1 / 16, 10: 1.0}  # Dense_10 is the readout though it sorts before Dense_2
    for i, s in expect.items():
        assert got[f"['params']['Dense_{i}']['kernel']"] == pytest.approx(s)
        assert got[f"['params']['Dense_{i}']['bias']"] == 1.0
    with pytest.raises(ConfigError):
        ARCHITECTURES.build("mulo", mup_multipliers="fan_out")


# ------------------------------------------------------------------ every arch


@pytest.mark.parametrize("name", OWN_ARCHS)
def test_arch_jits_and_vmaps_over_stacked_theta(name):
    lo = ARCHITECTURES.build(name)
    rng = np.random.default_rng(5)  # NumPy noise: no extra compiles
    stacked = jax.tree.map(
        lambda x: np.asarray(x)[None] + 0.3 * rng.standard_normal((3,) + x.shape, np.float32),
        initial_theta(name),
    )
    params = make_params()

    def loss_fn(p):
        return sum(0.5 * jnp.sum(jnp.square(x - 0.2)) for x in jax.tree.leaves(p))

    def run(th):
        opt = lo.optimizer(th)

        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p, loss=loss, num_steps=jnp.asarray(10))
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=3)
        return p, losses

    out, losses = jax.jit(jax.vmap(run))(stacked)
    assert losses.shape == (3, 3)
    for k, v in params.items():
        assert out[k].shape == (3,) + v.shape
        assert bool(jnp.all(jnp.isfinite(out[k])))
        assert not bool(jnp.allclose(out[k], v[None]))  # it moved
    assert not bool(jnp.allclose(out["mat"][0], out["mat"][1]))  # members differ


@pytest.mark.parametrize("shape", [(), (5,), (6, 4), (2, 3, 4, 5)])
def test_small_fc_lopt_fused_first_layer_equals_reference_features(shape):
    """The fast path (first layer accumulated channel by channel) equals the MLP applied to the
    materialised, normalised [*shape, 39] feature tensor."""
    theta = sfl.init_theta(jax.random.key(0))
    p = jax.random.normal(jax.random.key(1), shape)
    g = jax.random.normal(jax.random.key(2), shape)
    acc = sfl.F.update_accumulators(
        sfl.F.init_accumulators(p), g, sfl.MOMENTUM_DECAYS, sfl.RMS_DECAY, sfl.FACTORED_DECAYS
    )
    reference = sfl.F.apply_mlp(theta["mlp"], sfl._features(p, g, acc, jnp.array(3)))
    fast = jnp.stack(sfl._mlp_output(theta["mlp"], p, g, acc, jnp.array(3)), axis=-1)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(), (5,), (6, 4), (2, 3, 4, 5)])
def test_celo_fused_first_layer_equals_reference_features(shape):
    """Celo's fast path equals the MLP applied to the materialised, normalised [*shape, 30]
    feature tensor (row/column channels mixed on their vectors, duplicated ndim < 2 channels)."""
    theta = jax.tree.map(lambda w: 3.0 * w + 0.1, celo_mod.init_theta(jax.random.key(4))["mlp"])
    p = jax.random.normal(jax.random.key(1), shape)
    g = jax.random.normal(jax.random.key(2), shape)
    acc = celo_mod.F.init_accumulators(p)
    for _ in range(2):
        acc = celo_mod.F.update_accumulators(
            acc, g, celo_mod.MOMENTUM_DECAYS, celo_mod.RMS_DECAY, celo_mod.FACTORED_DECAYS
        )
    reference = celo_mod.F.apply_mlp(theta, celo_mod._features(p, g, acc))[..., :2]
    fast = jnp.stack([o.reshape(shape) for o in celo_mod._mlp_output(theta, p, g, acc)], axis=-1)
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-5)


def _published_celo_tree(key, hidden=4, lstm=64) -> dict:
    """A random tree in the layout of the authors' Celo theta.state (haiku names, stacked MLP)."""
    sizes = [1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3]
    ks = iter(jax.random.split(key, 64))
    rnd = lambda *shape: np.asarray(jax.random.normal(next(ks), shape), np.float32)  # noqa: E731
    ff = {f"w0__{i}": rnd(1, c, hidden) for i, c in enumerate(sizes)}
    ff |= {
        "b0": rnd(1, hidden),
        "w1": rnd(1, hidden, hidden),
        "b1": rnd(1, hidden),
        "w2": rnd(1, hidden, 3),
        "b2": rnd(1, 3),
    }
    dense = lambda n_in, n_out: {"w": rnd(n_in, n_out), "b": rnd(n_out)}  # noqa: E731
    rnn = {
        "linear": dense(18, lstm),
        "linear_1": dense(18, lstm),
        "linear_2": dense(18, lstm),
        "rnn/linear": dense(2 * lstm, 4 * lstm),
        "rnn_to_controls": dense(lstm, 1),
        "step_size": dense(lstm, 1),
    }
    return {
        "ff_mod_stack": {"~": ff},
        "lstm_init_state": {"hidden": rnd(1, lstm), "cell": rnd(1, lstm)},
        "rnn_params": rnn,
    }


def test_celo_loads_the_published_theta_state(tmp_path):
    """The authors' layout (written by flax.serialization) maps onto our theta: the MLP and the
    scheduler step equal a plain numpy evaluation written from the haiku names."""
    from flax import serialization

    import evolopt
    from evolopt.export import ThetaFileError

    tree = _published_celo_tree(jax.random.key(3))
    path = tmp_path / "theta.state"
    path.write_bytes(serialization.to_bytes(tree))
    theta = celo_mod.load_theta(str(path))
    assert celo_mod.theta_sizes(theta) == {"ff_hidden_size": 4, "ff_hidden_layers": 2, "lstm_hidden_size": 64}

    # the per-parameter MLP: first layer = sum_i block_i @ w0__i, ReLU, 4 -> 4, ReLU, 4 -> 3
    ff = tree["ff_mod_stack"]["~"]
    x = np.random.default_rng(0).normal(size=(5, 30)).astype(np.float32)
    bounds = np.cumsum([0, 1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3])
    h = sum(x[:, bounds[i] : bounds[i + 1]] @ ff[f"w0__{i}"][0] for i in range(14)) + ff["b0"][0]
    h = np.maximum(np.maximum(h, 0) @ ff["w1"][0] + ff["b1"][0], 0)
    want = h @ ff["w2"][0] + ff["b2"][0]
    from evolopt.architectures import features as F

    np.testing.assert_allclose(F.apply_mlp(theta["mlp"], jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)

    # the scheduler: x' = linear_2(x) + max(relu(linear_1(x))) (one row), haiku LSTM, eta = 0.1 exp(step_size(h))
    rnn, init = tree["rnn_params"], tree["lstm_init_state"]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    xs = np.random.default_rng(1).normal(size=18).astype(np.float32)
    mix = (
        xs @ rnn["linear_2"]["w"]
        + rnn["linear_2"]["b"]
        + np.maximum(xs @ rnn["linear_1"]["w"] + rnn["linear_1"]["b"], 0)
    )
    h0, c0 = init["hidden"][0], init["cell"][0]
    i, g, f, o = np.split(np.concatenate([mix, h0]) @ rnn["rnn/linear"]["w"] + rnn["rnn/linear"]["b"], 4)
    c1 = sig(f + 1) * c0 + sig(i) * np.tanh(g)
    h1 = sig(o) * np.tanh(c1)
    eta = 0.1 * np.exp(h1 @ rnn["step_size"]["w"] + rnn["step_size"]["b"])[0]
    got_eta, (got_h, got_c) = celo_mod.scheduler_step(
        theta["scheduler"], jnp.asarray(xs), (theta["scheduler"]["init_h"], theta["scheduler"]["init_c"])
    )
    np.testing.assert_allclose([got_eta], [eta], rtol=1e-4)
    np.testing.assert_allclose(got_h, h1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_c, c1, rtol=1e-4, atol=1e-6)

    # and users load it like any theta file; a broken file is one clear error
    opt = evolopt.load_optimizer(str(path), arch="celo", learning_rate=1e-3)
    params = {"w": jnp.ones((3, 4))}
    updates, _ = opt.update(params, opt.init(params), params, loss=jnp.asarray(1.0))
    assert np.all(np.isfinite(updates["w"]))
    (tmp_path / "bad.state").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ThetaFileError, match="not a readable Celo theta.state"):
        evolopt.load_optimizer(str(tmp_path / "bad.state"), arch="celo")
    del tree["rnn_params"]["step_size"]
    (tmp_path / "partial.state").write_bytes(serialization.to_bytes(tree))
    with pytest.raises(ThetaFileError, match="step_size"):
        evolopt.load_optimizer(str(tmp_path / "partial.state"), arch="celo")

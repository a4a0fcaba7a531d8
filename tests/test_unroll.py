"""The fitness of a member is the mean normalised loss of its truncation, split at resets.

References are closed forms: SGD on a noiseless quadratic
``f(x) = 0.5 sum h (x - c)^2`` from ``x0 = 0`` has ``x_t - c = (1 - lr h)^t (-c)``, so
``f_t = 0.5 sum h c^2 (1 - lr h)^(2t)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import evolopt.architectures  # noqa: F401
import evolopt.strategies  # noqa: F401
import evolopt.task_families  # noqa: F401
from evolopt.architectures.baselines import baseline
from evolopt.meta import MetaTrainer, population_mesh
from evolopt.registry import STRATEGIES, TASK_FAMILIES
from evolopt.unroll import UnrollConfig, init_inner_state, unroll

LR = 0.5


def closed_form_losses(task, steps, lr=LR):
    h, c = np.asarray(task["h"], np.float64), np.asarray(task["c"], np.float64)
    t = np.arange(steps)[:, None]
    return 0.5 * np.sum(h * c**2 * (1 - lr * h) ** (2 * t), axis=1)


@pytest.fixture(scope="module")
def family():
    return TASK_FAMILIES.build("quadratic", dim=6, condition=10.0)


def test_truncation_loss_equals_closed_form_and_splits_at_reset(family):
    """T = 7, K = 5: truncation 1 starts a trajectory at its first step (all 'after');
    truncation 2 has 2 steps of it ('before') then a new trajectory for 3 steps ('after')."""
    sgd = baseline("sgd", LR)
    cfg = UnrollConfig(truncation_length=5, min_length=7, max_length=7, stagger=False, loss_clip=1e9)
    state = init_inner_state(jax.random.key(3), {}, family, sgd, cfg)
    run = jax.jit(lambda s: unroll({}, s, family, sgd, cfg))

    s1, loss1 = run(state)
    first = closed_form_losses(s1.task, 7) / family.loss_scale
    assert bool(loss1.reset)
    np.testing.assert_allclose(loss1.before, 0.0)
    np.testing.assert_allclose(loss1.after, first[:5].sum() / 5, rtol=1e-5)
    assert int(s1.step) == 5

    s2, loss2 = run(s1)
    second = closed_form_losses(s2.task, 3) / family.loss_scale
    assert bool(loss2.reset) and int(s2.step) == 3
    assert not np.allclose(np.asarray(s1.task["c"]), np.asarray(s2.task["c"])), "a reset samples a new task"
    np.testing.assert_allclose(loss2.before, first[5:7].sum() / 5, rtol=1e-5)
    np.testing.assert_allclose(loss2.after, second.sum() / 5, rtol=1e-5)

    _, loss3 = run(s2)  # steps 3..7 of the second trajectory: 4 before, then a reset at its step 7
    assert bool(loss3.reset)
    np.testing.assert_allclose(
        loss3.before, closed_form_losses(s2.task, 7)[3:7].sum() / 5 / family.loss_scale, rtol=1e-5
    )


def test_diverging_inner_run_scores_worst_and_is_counted(family):
    sgd = baseline("sgd", 50.0)  # lr * h up to 50: |1 - lr h| > 1 blows up to inf, then NaN
    cfg = UnrollConfig(truncation_length=60, min_length=60, max_length=60, stagger=False, loss_clip=1.5)
    state = init_inner_state(jax.random.key(0), {}, family, sgd, cfg)
    _, loss = jax.jit(lambda s: unroll({}, s, family, sgd, cfg))(state)
    assert int(loss.nonfinite) > 0
    assert np.isfinite(float(loss.total))
    assert float(loss.total) > 1.4  # clipped at 1.5 almost everywhere: the worst fitness


def test_generation_fitness_matches_closed_form_and_partners_share_tasks(family):
    """Full-horizon mode with a theta-free SGD 'architecture': every member's fitness is the
    closed-form mean loss of its tasks, and antithetic partners (i, i + N/2) train the same tasks."""
    sgd = baseline("sgd", LR)
    theta0 = {"unused": jnp.zeros(3)}  # ES needs a vector; SGD ignores it
    strategy = STRATEGIES.build("open_es", 8, theta0, 10)
    cfg = UnrollConfig(8, 8, 8, False, 1e9)
    trainer = MetaTrainer(strategy, family, sgd, cfg, 3, population_mesh())
    state = trainer.init(jax.random.key(0), theta0)
    population, _ = strategy.ask(jax.random.key(1), state.strategy)
    inner, losses = jax.jit(trainer.train_members)(population, state.inner)
    tasks = jax.device_get(inner.task)
    for i in range(8):
        for k in range(3):
            task = jax.tree.map(lambda x: x[i, k], tasks)
            expected = closed_form_losses(task, 8).mean() / family.loss_scale
            np.testing.assert_allclose(losses.total[i, k], expected, rtol=1e-5)
    np.testing.assert_array_equal(tasks["c"][:4], tasks["c"][4:])
    assert not np.allclose(tasks["c"][0, 0], tasks["c"][1, 0])
    np.testing.assert_allclose(strategy.fitness(losses), np.asarray(losses.total).mean(axis=1), rtol=1e-6)


def test_chunked_member_training_equals_all_at_once(family):
    """member_chunks trades memory for time: the same losses and inner states, member by member."""
    sgd = baseline("sgd", LR)
    theta0 = {"unused": jnp.zeros(3)}
    strategy = STRATEGIES.build("open_es", 8, theta0, 10)
    cfg = UnrollConfig(6, 6, 9, True, 1e9)
    results = []
    for chunks in (1, 2, 4):
        trainer = MetaTrainer(strategy, family, sgd, cfg, 2, population_mesh(), member_chunks=chunks)
        state = trainer.init(jax.random.key(0), theta0)
        population, _ = strategy.ask(jax.random.key(1), state.strategy)
        results.append(jax.jit(trainer.train_members)(population, state.inner))
    for inner, losses in results[1:]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), losses, results[0][1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), inner.params, results[0][0].params)
    with pytest.raises(ValueError, match="member_chunks=3"):
        MetaTrainer(strategy, family, sgd, cfg, 2, population_mesh(), member_chunks=3)


def test_valid_meta_loss_is_the_validation_batch_loss_at_each_steps_params(family):
    """``meta_loss="valid"``: a step scores the loss of a validation batch at the params it starts from.
    Validation data here is the centre shifted by s, so with SGD from 0 (``x_t - c = -(1 - lr h)^t c``)
    the closed form is ``0.5 sum h ((1 - lr h)^t c + s)^2``, and the update itself is unchanged."""
    import dataclasses

    shift = 0.3
    shifted = dataclasses.replace(family, valid_batch=lambda key, task: {"eps": jnp.full_like(task["c"], shift)})
    sgd = baseline("sgd", LR)
    results = {}
    for meta_loss in ("train", "valid"):
        cfg = UnrollConfig(truncation_length=5, min_length=9, max_length=9, loss_clip=1e9, meta_loss=meta_loss)
        state = init_inner_state(jax.random.key(3), {}, shifted, sgd, cfg)
        results[meta_loss] = jax.jit(lambda s, cfg=cfg: unroll({}, s, shifted, sgd, cfg))(state)
    (s_train, l_train), (s_valid, l_valid) = results["train"], results["valid"]
    np.testing.assert_allclose(s_train.params["x"], s_valid.params["x"])  # same training
    h, c = np.asarray(s_valid.task["h"], np.float64), np.asarray(s_valid.task["c"], np.float64)
    decay = (1 - LR * h) ** np.arange(5)[:, None]
    want = 0.5 * np.sum(h * (decay * c + shift) ** 2, axis=1) / family.loss_scale
    np.testing.assert_allclose(l_valid.after, want.sum() / 5, rtol=1e-5)
    np.testing.assert_allclose(
        l_train.after, closed_form_losses(s_train.task, 5).sum() / 5 / family.loss_scale, rtol=1e-5
    )


def test_valid_meta_loss_needs_a_family_with_validation_data():
    from evolopt.config import load_config
    from evolopt.loop import build
    from evolopt.registry import ConfigError

    cfg = load_config(["task_family=quadratic", "unroll.meta_loss=valid"])
    expected = "unroll.meta_loss='valid' needs validation data, and task_family 'quadratic' has none"
    with pytest.raises(ConfigError, match=expected):
        build(cfg)


def test_carry_layout_flattens_exactly_the_tensors_with_short_rows():
    """Rows shorter than 16 floats (a classifier head, a conv kernel with 8 outputs) go flat; vectors,
    scalars and long rows keep their shape; ``from_carry`` restores every shape and value."""
    from evolopt.architectures.base import SHORT_ROW
    from evolopt.unroll import from_carry, to_carry

    assert SHORT_ROW == 16
    tree = {
        "head": jnp.arange(320.0).reshape(32, 10),
        "hidden": jnp.ones((64, 32)),
        "bias": jnp.ones(10),
        "conv": jnp.ones((3, 3, 4, 8)),
        "scale": jnp.ones(()),
        "edge": jnp.ones((2, 16)),
    }
    shapes = jax.tree.map(jnp.shape, tree)
    carried = to_carry(tree, shapes)
    got = jax.tree.map(jnp.shape, carried)
    assert got == {"head": (320,), "hidden": (64, 32), "bias": (10,), "conv": (288,), "scale": (), "edge": (2, 16)}
    np.testing.assert_array_equal(carried["head"], np.arange(320.0))  # row-major: a free reshape
    jax.tree.map(np.testing.assert_array_equal, from_carry(carried, shapes), tree)
    assert to_carry(tree, None) is tree and from_carry(tree, None) is tree


def test_short_rows_carried_flat_train_as_the_transform_applied_in_shape():
    """small_fc_lopt with ``flat_short_rows`` on image_mlp (its [32, 10] head carried as [320]): a
    truncation that resets inside, scored on training and validation batches, gives the losses,
    params and optimizer state of the same optax transform applied step by step to params kept in
    their shapes (rtol 1e-5: XLA's vectorised loop rounds differently); so do evaluation curves."""
    import dataclasses

    from evolopt.registry import ARCHITECTURES
    from evolopt.unroll import eval_curves, new_trajectory, train_step, valid_loss

    family = TASK_FAMILIES.build("image_mlp", batch_size=16)
    flat = dataclasses.replace(ARCHITECTURES.build("small_fc_lopt"), flat_short_rows=True)
    shaped = dataclasses.replace(flat, flat_short_rows=False)
    theta = flat.init_theta(jax.random.key(0))
    cfg = UnrollConfig(truncation_length=3, min_length=4, max_length=4, loss_clip=1e9, meta_loss="both")
    state = init_inner_state(jax.random.key(3), theta, family, flat, cfg).replace(step=jnp.asarray(2))
    got_state, got = jax.jit(lambda s: unroll(theta, s, family, flat, cfg))(state)
    for lopt, head in ((flat, (320,)), (shaped, (32, 10))):
        jaxpr = jax.make_jaxpr(lambda s, lopt=lopt: unroll(theta, s, family, lopt, cfg))(state).jaxpr
        (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        params = [v.aval.shape for v in scan.outvars[: len(jax.tree.leaves(state.params))]]  # carried first
        assert sorted(params) == sorted([(64, 32), (32,), head, (10,)]), params

    step = jax.jit(lambda s: train_step(flat.optimizer(theta), family, s))  # shapes=None: params in shape
    st, losses, norm = state, [], lambda x: float(x) / family.loss_scale
    for _ in range(3):  # steps 2, 3 of the first trajectory, then step 0 of a fresh one
        if int(st.step) >= int(st.length):
            st = new_trajectory(st.key, theta, family, flat, cfg)
        held = norm(valid_loss(family, st))
        st, loss = step(st)
        losses.append(0.5 * norm(loss) + 0.5 * held)
    assert bool(got.reset)
    np.testing.assert_allclose(got.before, sum(losses[:2]) / 3, rtol=1e-5)
    np.testing.assert_allclose(got.after, losses[2] / 3, rtol=1e-5)
    assert jax.tree.map(jnp.shape, got_state.params) == jax.tree.map(jnp.shape, st.params)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # noqa: E731
    jax.tree.map(close, (got_state.params, got_state.opt_state), (st.params, st.opt_state))

    curves = [eval_curves(theta, jax.random.key(5), family, lopt, 6, meta_loss="both") for lopt in (flat, shaped)]
    np.testing.assert_allclose(curves[0].train, curves[1].train, rtol=1e-5)
    np.testing.assert_allclose(curves[0].valid, curves[1].valid, rtol=1e-5)
    np.testing.assert_allclose(curves[0].final_valid, curves[1].final_valid, rtol=1e-5)

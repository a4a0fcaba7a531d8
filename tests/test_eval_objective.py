"""The run's evaluation measures the objective being trained (``unroll.meta_loss``).

The reference is a plain Python loop over inner steps (no scan, no vmap): per task it draws
the task, init and batches from the same keys, scores each step's params on the training
minibatch and on a validation batch (``family.valid_batch``, ``family.loss``), applies the
optimizer's update, and averages ``min(loss / loss_scale, clip)`` over steps and tasks.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

import evolopt.architectures  # noqa: F401
import evolopt.task_families  # noqa: F401
from evolopt.architectures.baselines import baseline
from evolopt.meta import make_curve_evaluator
from evolopt.registry import TASK_FAMILIES
from evolopt.unroll import VALID_STREAM

CLIP = 1.5
MLP = {"hidden": [8], "batch_size": 16}


def reference_curves(theta, key, family, lopt, num_tasks, steps, clip=CLIP, task_keys=None, finals=None, singles=None):
    """``(train [E, steps], valid [E, steps])`` normalised curves, step by step in Python, on the
    tasks of ``split(key, num_tasks)`` (as the evaluator draws them) or of the given ``task_keys``.
    ``finals``: a list that receives each task's final test loss, the normalised mean loss of 128
    validation batches keyed ``split(fold_in(trajectory key, 2**31 - 1), 128)``, one by one; ``singles``:
    the loss of the one batch keyed ``fold_in(trajectory key, 2**31 - 1)`` (the evaluation before round 21)."""
    norm = lambda loss: min(float(loss) / family.loss_scale, clip) if np.isfinite(float(loss)) else clip  # noqa: E731
    grad = jax.jit(jax.value_and_grad(family.loss))
    loss_at = jax.jit(family.loss)
    opt = lopt.optimizer(theta)
    update = jax.jit(lambda g, s, p, loss, n: opt.update(g, s, p, loss=loss, num_steps=n))
    train, valid = np.zeros((num_tasks, steps)), np.zeros((num_tasks, steps))
    task_keys = jax.random.split(key, num_tasks) if task_keys is None else task_keys
    for e, task_key in enumerate(task_keys):
        k_task, k_init, _, k_traj = jax.random.split(task_key, 4)  # a trajectory's keys (unroll.new_trajectory)
        task = family.sample_task(k_task)
        params = family.init_params(k_init, task)
        state = opt.init(params)
        for t in range(steps):
            if family.valid_batch is not None:
                v_key = jax.random.fold_in(jax.random.fold_in(k_traj, t), VALID_STREAM)
                valid[e, t] = norm(loss_at(params, task, family.valid_batch(v_key, task)))
            loss, g = grad(params, task, family.sample_batch(jax.random.fold_in(k_traj, t), task))
            train[e, t] = norm(loss)
            updates, state = update(g, state, params, loss, steps)
            params = optax.apply_updates(params, updates)
        if finals is not None:
            keys = jax.random.split(jax.random.fold_in(k_traj, 2**31 - 1), 128)
            finals.append(norm(np.mean([float(loss_at(params, task, family.valid_batch(k, task))) for k in keys])))
        if singles is not None:
            single_key = jax.random.fold_in(k_traj, 2**31 - 1)
            singles.append(norm(loss_at(params, task, family.valid_batch(single_key, task))))
    return train, valid


@pytest.fixture(scope="module")
def image_mlp():
    return TASK_FAMILIES.build("image_mlp", **MLP)


def test_valid_meta_loss_is_the_mean_validation_loss_along_the_trajectory(image_mlp):
    lopt, theta, key, steps = baseline("adam", 3e-2), {}, jax.random.key(5), 6
    want_train, want_valid = reference_curves(theta, key, image_mlp, lopt, 2, steps)
    assert abs(want_valid.mean() - want_train.mean()) > 1e-3  # the two objectives differ here

    got = jax.device_get(make_curve_evaluator(image_mlp, lopt, 2, steps, CLIP, meta_loss="valid")(theta, key))
    np.testing.assert_allclose(got.valid, want_valid, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got.meta().mean(), want_valid.mean(), rtol=2e-5)
    np.testing.assert_allclose(got.train, want_train, rtol=2e-5, atol=1e-6)  # the same scan's training loss
    # meta_loss=train scores no validation batches, and scoring them in between leaves training
    # unchanged, bit for bit
    plain = jax.device_get(make_curve_evaluator(image_mlp, lopt, 2, steps, CLIP)(theta, key))
    assert plain.valid is None
    curves = plain.train
    np.testing.assert_array_equal(got.train, curves)
    np.testing.assert_allclose(curves.mean(), want_train.mean(), rtol=2e-5)


def test_the_final_test_loss_is_the_mean_of_128_validation_batches_at_the_final_params(image_mlp):
    """Not one batch: one small batch's loss is a test set too small to compare optimizers on
    (experiments/ns_input, round 21)."""
    lopt, theta, key, steps, finals, singles = baseline("adam", 3e-2), {}, jax.random.key(5), 6, [], []
    reference_curves(theta, key, image_mlp, lopt, 2, steps, finals=finals, singles=singles)
    got = jax.device_get(make_curve_evaluator(image_mlp, lopt, 2, steps, CLIP)(theta, key))
    np.testing.assert_allclose(got.final_valid, finals, rtol=2e-5)
    assert np.all(np.abs(np.asarray(finals) - singles) > 1e-4)  # one batch (the old instrument) differs by more


def test_linear_weights_average_one_and_put_three_quarters_on_the_second_half():
    from evolopt.unroll import step_weight

    for steps in (1, 2, 7, 100):
        w = np.asarray(step_weight(jax.numpy.arange(steps), jax.numpy.asarray(steps), "linear"))
        np.testing.assert_allclose(w, linear_weights(steps), rtol=1e-6)
        np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)  # sum_t 2(t+1)/(T+1) = T
    # the second half of T = 100 steps: 1 - (T/2 + 1) / (2 (T + 1)) of the weight
    np.testing.assert_allclose(w[50:].sum() / w.sum(), 1 - 51 / 202, rtol=1e-6)
    np.testing.assert_array_equal(step_weight(jax.numpy.arange(5), jax.numpy.asarray(5), "uniform"), np.ones(5))


@pytest.mark.parametrize("meta_loss, share", [("valid", 0.5), ("both", 0.5), ("both", 0.2)])
def test_linear_weighting_in_the_evaluator_and_in_pes_truncations_matches_the_reference(image_mlp, meta_loss, share):
    """The evaluator's ``weighted()`` mean and the sum of a trajectory's truncation losses (what
    PES credits) are both sum_t w(t) loss(t) / T of the step-by-step reference, w = 2(t+1)/(T+1),
    loss(t) the validation loss or (``both``) (1 - s) x the training loss + s x the validation
    loss, s = ``unroll.valid_share``."""
    from evolopt.unroll import UnrollConfig, init_inner_state, unroll

    lopt, theta, key, steps = baseline("adam", 3e-2), {}, jax.random.key(5), 6
    curves = reference_curves(theta, key, image_mlp, lopt, 2, steps)
    want = meta_curve(curves, meta_loss, share)
    if share != 0.5:  # the share changes the objective here
        assert abs(want.mean() - meta_curve(curves, meta_loss).mean()) > 1e-3
    evaluate = make_curve_evaluator(
        image_mlp, lopt, 2, steps, CLIP, meta_loss=meta_loss, meta_weight="linear", valid_share=share
    )
    got = jax.device_get(evaluate(theta, key))
    np.testing.assert_allclose(got.weighted().mean(), (want * linear_weights(steps)).mean(), rtol=2e-5)
    assert abs(got.weighted().mean() - want.mean()) > 1e-3  # the weighting changes the objective here

    # one trajectory of T = 6 steps, in two truncations of 3: the first starts it (its loss is `after`
    # the reset), the second continues it (`before`)
    cfg = UnrollConfig(3, steps, steps, False, CLIP, meta_loss, "linear", share)
    state = init_inner_state(jax.random.key(9), theta, image_mlp, lopt, cfg)
    trajectory_key = state.key  # the first truncation starts the trajectory of this key
    state, first = unroll(theta, state, image_mlp, lopt, cfg)
    _, second = unroll(theta, state, image_mlp, lopt, cfg)
    assert bool(first.reset) and not bool(second.reset)
    ref = meta_curve(
        reference_curves(theta, None, image_mlp, lopt, 1, steps, task_keys=[trajectory_key]), meta_loss, share
    )
    total = 3 * (float(first.after) + float(second.before)) / steps  # each truncation's sums are over K = 3
    np.testing.assert_allclose(total, (ref[0] * linear_weights(steps)).mean(), rtol=2e-5)
    assert float(first.before) == 0.0


def test_valid_meta_loss_without_validation_data_is_refused():
    quadratic = TASK_FAMILIES.build("quadratic", dim=4)
    for meta_loss in ("valid", "both"):
        evaluate = make_curve_evaluator(quadratic, baseline("sgd", 0.1), 1, 3, meta_loss=meta_loss)
        with pytest.raises(ValueError, match=f"meta_loss='{meta_loss}' needs validation data, .*'quadratic' has none"):
            evaluate({}, jax.random.key(0))
    with pytest.raises(ValueError, match="meta_loss='test'; valid choices: train, valid, both"):
        make_curve_evaluator(quadratic, baseline("sgd", 0.1), 1, 3, meta_loss="test")({}, jax.random.key(0))
    with pytest.raises(ValueError, match="meta_weight='end'; valid choices: uniform, linear"):
        make_curve_evaluator(quadratic, baseline("sgd", 0.1), 1, 3, meta_weight="end")({}, jax.random.key(0))
    for share in (1.5, -0.1, "half"):
        with pytest.raises(ValueError, match=f"valid_share={share!r}|valid_share={share}"):
            make_curve_evaluator(quadratic, baseline("sgd", 0.1), 1, 3, valid_share=share)({}, jax.random.key(0))


RUN = [
    "task_family=image_mlp",
    "task_family.hidden=[8]",
    "task_family.batch_size=16",
    "arch=adam_hparams",
    "arch.init_learning_rate=0.03",  # not the evaluation's Adam (lr 1e-3): the two rows must differ
    "strategy=open_es",
    "population_size=2",
    "tasks_per_member=1",
    "unroll.truncation_length=3",
    "unroll.min_length=3",
    "unroll.max_length=3",
    "unroll.meta_loss=valid",
    "evaluation.steps=5",
    "evaluation.num_tasks=2",
    "evaluation.meta_loss_every=1",
    "generations=1",
    "progress=false",
]


def captured_plot(monkeypatch):
    """The axes ``plot_run`` draws on (matplotlib's ``subplots`` wrapped)."""
    import matplotlib.pyplot as plt

    made, subplots = [], plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: made.append(subplots(*a, **k)) or made[-1])
    return made


def meta_curve(curves, meta_loss, share=0.5):
    """The reference's per-step meta-loss: the training curve, the validation curve, or their
    mix (1 - share) x training + share x validation."""
    train, valid = curves
    return {"train": train, "valid": valid, "both": (1 - share) * train + share * valid}[meta_loss]


def linear_weights(steps):
    """``unroll.meta_weight=linear`` written out: step t of a T-step run weighs 2 (t + 1) / (T + 1)."""
    return np.array([2.0 * (t + 1) / (steps + 1) for t in range(steps)])


def check_run(run_dir, monkeypatch, meta_loss, meta_weight="uniform"):
    """Generation 0 evaluates theta0: its logged meta-loss (and Adam's) is the reference's mean of
    the loss ``unroll.meta_loss`` names, weighted as ``unroll.meta_weight`` says; the summary, plot
    and theta header say which loss it is."""
    from omegaconf import OmegaConf

    from evolopt.export import load_theta_file
    from evolopt.logger import plot_run
    from evolopt.loop import build
    from evolopt.summary import summarize

    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.unroll.meta_loss == meta_loss
    trainer, theta0 = build(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row = rows[0]
    assert row["generation"] == 0
    eval_key, ev = jax.random.fold_in(jax.random.key(cfg.seed), 2), cfg.evaluation
    mine = reference_curves(theta0, eval_key, trainer.family, trainer.lopt, ev.num_tasks, ev.steps)
    adam = reference_curves({}, eval_key, trainer.family, baseline("adam", ev.adam_lr), ev.num_tasks, ev.steps)
    w = linear_weights(ev.steps) if meta_weight == "linear" else np.ones(ev.steps)
    np.testing.assert_allclose(row["meta_loss/mean_theta"], (meta_curve(mine, meta_loss) * w).mean(), rtol=2e-5)
    np.testing.assert_allclose(row["meta_loss/adam"], (meta_curve(adam, meta_loss) * w).mean(), rtol=2e-5)
    if meta_loss != "train" or meta_weight == "linear":  # the plain training loss comes along, under its own name
        np.testing.assert_allclose(row["meta_loss/mean_theta_train"], mine[0].mean(), rtol=2e-5)
        np.testing.assert_allclose(row["meta_loss/adam_train"], adam[0].mean(), rtol=2e-5)
    else:
        assert "meta_loss/mean_theta_train" not in row

    loss = {"valid": "validation loss", "train": "training loss", "both": "mean of training and validation loss"}[
        meta_loss
    ]
    objective = loss if meta_weight == "uniform" else f"{loss}, steps weighted 2(t+1)/(T+1)"
    summary = summarize(run_dir)
    assert f"meta-loss ({objective}) of the mean theta {row['meta_loss/mean_theta']:.4f} (generation 0)" in summary
    assert ("its training loss (not the objective)" in summary) == (meta_loss != "train" or meta_weight == "linear")
    plot = captured_plot(monkeypatch)
    plot_run(run_dir, meta_loss, meta_weight)
    _, ax = plot[-1]
    assert f"meta_weight={meta_weight}" in ax.get_title()
    loss = loss if meta_weight == "uniform" else f"{loss}, end-weighted"
    assert ax.get_ylabel() == f"normalised {loss}" and loss in ax.get_title()
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert list(lines[f"meta-loss ({loss}) of mean theta"]) == [r["meta_loss/mean_theta"] for r in rows]
    assert list(lines["Adam (same tasks)"]) == [r["meta_loss/adam"] for r in rows]
    _, header = load_theta_file(run_dir / "theta.npz")
    assert header["evaluation"]["meta_loss"] == rows[-1]["meta_loss/mean_theta"]
    settings = f"(unroll.meta_loss={meta_loss}, unroll.meta_weight={meta_weight})"
    assert f"{objective} over the steps {settings}" in header["evaluation"]["meta_loss_is"]
    assert ("train_loss" in header["evaluation"]) == (meta_loss != "train" or meta_weight == "linear")


@pytest.mark.parametrize("meta_loss, meta_weight", [("valid", "uniform"), ("valid", "linear"), ("both", "linear")])
def test_a_meta_loss_valid_run_logs_summarises_and_records_the_validation_objective(
    tmp_path, monkeypatch, meta_loss, meta_weight
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evolopt.config import load_config
    from evolopt.loop import meta_train

    overrides = [*RUN, f"unroll.meta_loss={meta_loss}", f"unroll.meta_weight={meta_weight}"]
    run_dir = meta_train(load_config([*overrides, f"run_dir={tmp_path / 'run'}"]))
    check_run(run_dir, monkeypatch, meta_loss, meta_weight)
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"meta_loss/mean_theta", "meta_loss/mean_theta_train", "meta_loss/adam_train"} <= tags
    curves = {f"eval_curve/gen_000000/{name}" for name in ("learned", "adam", "learned_train", "adam_train")}
    assert curves <= tags, sorted(tags)


def test_a_meta_loss_train_run_logs_summarises_and_records_the_training_objective(tiny_run, monkeypatch):
    check_run(tiny_run, monkeypatch, "train")

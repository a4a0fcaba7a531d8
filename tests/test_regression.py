"""The regression family against closed forms: the untrained loss is the targets' second moment, the
loss at the teacher's own parameters is the noise variance, and a linear student's optimum is
least squares (np.linalg.lstsq) on the training split."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evolopt.config import load_builtins
from evolopt.registry import TASK_FAMILIES
from evolopt.task_families.image_mlp import ACTIVATIONS, apply_mlp
from evolopt.task_families.regression import inputs

load_builtins()


def full_split(task, split, n_train, n_valid=1024, input_dim=16, act="tanh", noise_std=0.5, data_seed=0):
    """A whole split rebuilt from its parts: the module's fixed inputs, the task's teacher and noise."""
    x = inputs(n_train + n_valid, input_dim, data_seed)
    rows = np.arange(n_train) if split == "train" else np.arange(n_train, n_train + n_valid)
    clean = np.asarray(apply_mlp(task["teacher"], jnp.asarray(x[rows]), ACTIVATIONS[act]))
    return {"x": x[rows], "y": clean + noise_std * np.asarray(task["noise"])[rows], "clean": clean}


def test_untrained_student_scores_one_and_loss_scale_is_the_target_second_moment():
    family = TASK_FAMILIES.build("regression", noise_std=0.5, batch_size=512)
    assert family.loss_scale == pytest.approx(1.25)

    def one(key):
        task = family.sample_task(key)
        params = family.init_params(jax.random.fold_in(key, 1), task)
        return family.loss(params, task, family.sample_batch(jax.random.fold_in(key, 2), task)) / family.loss_scale

    losses = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 32))
    # E[y^2] = Var(teacher) + noise^2 = 1 + 0.25 per task up to the probe's standardisation error (~3%)
    assert float(jnp.mean(losses)) == pytest.approx(1.0, abs=0.05)


def test_loss_at_the_teachers_parameters_is_the_noise_variance():
    noise = 0.3
    family = TASK_FAMILIES.build("regression", hidden=[24], teacher_hidden=[24], noise_std=noise, n_valid=4096)
    task = family.sample_task(jax.random.key(3))
    valid = family.valid_batch(jax.random.key(0), task)
    loss = float(family.loss(task["teacher"], task, valid))  # the student has the teacher's shape
    # mean of noise^2 * chi^2_1 over 4096 examples: sd noise^2 sqrt(2 / 4096) = 0.0020; 4 sd
    assert loss == pytest.approx(noise**2, abs=4 * noise**2 * math.sqrt(2 / 4096))
    # and exactly noise^2 * mean(e^2), with e the validation split's own noise draws
    ref = full_split(task, "valid", 4096, n_valid=4096, noise_std=noise)
    np.testing.assert_allclose(valid["x"], ref["x"])
    np.testing.assert_allclose(valid["y"], ref["y"], atol=1e-5)
    np.testing.assert_allclose(loss, np.mean((ref["y"] - ref["clean"]) ** 2), rtol=1e-4)


def test_a_linear_students_optimum_is_least_squares_on_the_training_split():
    n, d = 256, 6
    family = TASK_FAMILIES.build("regression", input_dim=d, hidden=[], n_train=n, batch_size=n)
    task = family.sample_task(jax.random.key(7))
    data = full_split(task, "train", n, input_dim=d)
    data.pop("clean")
    design = np.concatenate([data["x"], np.ones((n, 1))], axis=1)
    coef, residual, *_ = np.linalg.lstsq(design.astype(np.float64), data["y"].astype(np.float64), rcond=None)
    opt = {"dense_0": {"kernel": jnp.asarray(coef[:d], jnp.float32), "bias": jnp.asarray(coef[d], jnp.float32)}}
    full = {"x": jnp.asarray(data["x"]), "y": jnp.asarray(data["y"])}
    assert float(family.loss(opt, task, full)) == pytest.approx(float(residual[0]) / n, rel=1e-4)
    grad = jax.grad(family.loss)(opt, task, full)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad)) < 1e-4
    # full-batch gradient descent on the family's loss from its own (zero) start reaches the same point
    params = family.init_params(jax.random.key(0), task)
    assert all(float(jnp.abs(leaf).max()) == 0 for leaf in jax.tree.leaves(params))
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.4 * g, p, jax.grad(family.loss)(p, task, full)))
    for _ in range(300):
        params = step(params)
    np.testing.assert_allclose(params["dense_0"]["kernel"], coef[:d], atol=1e-4)
    np.testing.assert_allclose(params["dense_0"]["bias"], coef[d], atol=1e-4)


def test_batches_come_from_the_fixed_training_split_and_validation_is_separate():
    n = 32
    family = TASK_FAMILIES.build("regression", input_dim=4, n_train=n, n_valid=16, batch_size=8)
    task = family.sample_task(jax.random.key(1))
    train = full_split(task, "train", n, n_valid=16, input_dim=4)
    batch = family.sample_batch(jax.random.key(2), task)
    for x, y in zip(np.asarray(batch["x"]), np.asarray(batch["y"])):
        row = np.nonzero(np.all(np.isclose(train["x"], x), axis=1))[0]
        assert len(row) == 1 and np.allclose(train["y"][row[0]], y)
    v1, v2 = family.valid_batch(jax.random.key(0), task), family.valid_batch(jax.random.key(9), task)
    np.testing.assert_array_equal(v1["x"], v2["x"])  # the whole validation set, whatever the key
    assert v1["x"].shape == (16, 4)
    assert not np.any(np.all(np.isclose(train["x"][:, None], np.asarray(v1["x"])[None]), axis=-1))
    other = family.sample_task(jax.random.key(2))  # another task: another teacher and other noise
    assert not np.allclose(other["teacher"]["dense_0"]["kernel"], task["teacher"]["dense_0"]["kernel"])
    assert not np.allclose(other["noise"], task["noise"])

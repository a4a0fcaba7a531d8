"""Regression with a squared loss: a student MLP fits a random teacher MLP plus label noise.

Generated data only (nothing is read or downloaded). The inputs are one fixed sample
``x ~ N(0, I)`` of ``n_train + n_valid`` rows (:func:`inputs`, numpy, seeded by
``data_seed``): the first ``n_train`` are the training split, the rest the validation
split. A task is a teacher and its label noise, both drawn from the task key: an MLP
``input_dim -> teacher_hidden -> output_dim`` with truncated-normal weights (std
1/sqrt(fan_in)) and N(0, 0.5^2) hidden biases, whose output is shifted and scaled (on 2048
probe inputs) to mean 0 and variance 1 per output, and one noise draw ``e_i ~ N(0, I)`` per
example; the targets are ``y_i = teacher(x_i) + noise_std * e_i``. Training batches draw
``batch_size`` rows uniformly (with replacement) from the training split; the validation
batch is the whole validation split (same teacher, other inputs and noise).

The student is an MLP ``input_dim -> hidden -> output_dim`` (``hidden=[]``: linear) with
the image MLPs' initialisation except a zero output layer, so an untrained student predicts
0 and its loss is the targets' second moment ``E[y^2] = 1 + noise_std^2``: that is
``loss_scale``, and an untrained student scores ~1. The loss is the mean squared error over
examples and outputs. The noise is a floor: at the teacher's own parameters the expected
loss is ``noise_std^2`` (normalised: ``noise_std^2 / (1 + noise_std^2)``), which a student
goes below on the training split only by fitting its noise (the validation loss shows it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.contracts import TaskFamily, example_mean, require_positive
from evolopt.registry import ConfigError, register_task_family
from evolopt.task_families.image_mlp import ACTIVATIONS, apply_mlp, init_mlp

PROBE = 2048  # inputs on which each teacher's output is standardised


def inputs(n: int, input_dim: int, data_seed: int) -> np.ndarray:
    """The fixed inputs ``[n, input_dim]`` float32, i.i.d. N(0, 1) (rows ``< n_train``: training split)."""
    return np.random.default_rng(data_seed).standard_normal((n, input_dim)).astype(np.float32)


def _standardised_teacher(key: jax.Array, sizes: list[int], act) -> dict:
    """A random teacher whose output has mean 0 and variance 1 on ``PROBE`` inputs (folded into the last layer)."""
    k_w, k_b, k_probe = jax.random.split(key, 3)
    teacher = init_mlp(k_w, sizes)
    last = f"dense_{len(sizes) - 2}"
    for i, k in enumerate(jax.random.split(k_b, len(sizes) - 2)):  # hidden biases: the teacher is not homogeneous
        teacher[f"dense_{i}"]["bias"] = 0.5 * jax.random.normal(k, (sizes[i + 1],))
    out = apply_mlp(teacher, jax.random.normal(k_probe, (PROBE, sizes[0])), act)
    mean, std = out.mean(0), out.std(0) + 1e-6
    teacher[last] = {"kernel": teacher[last]["kernel"] / std, "bias": (teacher[last]["bias"] - mean) / std}
    return teacher


def _check(activation: str, teacher_activation: str, noise_std: float, **sizes) -> None:
    """One-line ConfigErrors for unknown activations, sizes below 1 and a negative noise level."""
    for name, act in (("activation", activation), ("teacher_activation", teacher_activation)):
        if act not in ACTIVATIONS:
            raise ConfigError(f"unknown {name} '{act}'; valid choices: {', '.join(ACTIVATIONS)}")
    require_positive(**{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in sizes.items()})
    if not float(noise_std) >= 0:
        raise ConfigError(f"task_family.noise_std={noise_std} must be >= 0")


@register_task_family("regression")
def regression(
    *,
    input_dim: int = 16,
    output_dim: int = 1,
    hidden: list = (32,),
    activation: str = "tanh",
    teacher_hidden: list = (32,),
    teacher_activation: str = "tanh",
    noise_std: float = 0.5,
    n_train: int = 4096,
    n_valid: int = 1024,
    batch_size: int = 64,
    data_seed: int = 0,
) -> TaskFamily:
    """Student MLPs ``input_dim -> hidden -> output_dim`` fitting random teachers with noise (MSE)."""
    _check(
        activation,
        teacher_activation,
        noise_std,
        input_dim=input_dim,
        output_dim=output_dim,
        hidden=hidden,
        teacher_hidden=teacher_hidden,
        n_train=n_train,
        n_valid=n_valid,
        batch_size=batch_size,
    )
    noise_std, n_train, output_dim = float(noise_std), int(n_train), int(output_dim)
    student_act, teacher_act = ACTIVATIONS[activation], ACTIVATIONS[teacher_activation]
    student_sizes = [int(input_dim), *(int(h) for h in hidden), output_dim]
    teacher_sizes = [int(input_dim), *(int(h) for h in teacher_hidden), output_dim]
    x_all = jnp.asarray(inputs(n_train + int(n_valid), int(input_dim), int(data_seed)))

    def sample_task(key):
        k_teacher, k_noise = jax.random.split(key)
        return {
            "teacher": _standardised_teacher(k_teacher, teacher_sizes, teacher_act),
            "noise": jax.random.normal(k_noise, (len(x_all), output_dim)),  # e_i of every example, both splits
        }

    def examples(task, rows):
        x = x_all[rows]
        return {"x": x, "y": apply_mlp(task["teacher"], x, teacher_act) + noise_std * task["noise"][rows]}

    def init_params(key, task):
        del task
        params = init_mlp(key, student_sizes)
        last = f"dense_{len(student_sizes) - 2}"
        params[last] = jax.tree.map(jnp.zeros_like, params[last])  # predicts 0: the untrained loss is E[y^2]
        return params

    def sample_batch(key, task):
        return examples(task, jax.random.randint(key, (batch_size,), 0, n_train))

    def valid_batch(key, task):
        del key  # the whole validation split, every time
        return examples(task, jnp.arange(n_train, len(x_all)))

    def loss(params, task, batch):
        return example_mean(jnp.square(apply_mlp(params, batch["x"], student_act) - batch["y"]), batch)

    return TaskFamily(
        "regression",
        sample_task,
        init_params,
        sample_batch,
        loss,
        loss_scale=1.0 + noise_std**2,
        valid_batch=valid_batch,
        batch_size=int(batch_size),
    )

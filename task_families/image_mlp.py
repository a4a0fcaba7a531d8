"""MLP classifiers on small images, as in the Celo/Celo2 meta-training tasks.

A task picks one of the configured data sets (all resized to the same
``image_size``, grey); the model is an MLP ``inputs -> hidden... -> classes``
with truncated-normal weights (std 1/sqrt(fan_in)) and zero biases, trained with
softmax cross-entropy on minibatches drawn uniformly from the training split.
``loss_scale = log(classes)``: an untrained model scores ~1.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.contracts import TaskFamily, example_mean, require_positive
from evolopt.registry import ConfigError, register_task_family
from evolopt.task_families import datasets

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


def stack_datasets(names: list[str], image_size: int, data_dir: str = "", grey: bool = True) -> dict:
    """Pad and stack data sets so a task can pick one by index inside jit.

    Images are flattened to ``[datasets, n_max, h*w*c]`` (zero-padded rows past
    ``n_<split>[d]`` are never sampled).
    """
    if not names:
        raise ConfigError("task_family.datasets is empty; valid choices: " + ", ".join(sorted(datasets.LOADERS)))
    data = [datasets.load(str(n), int(image_size), grey, str(data_dir)) for n in names]
    channels = max(d.x_train.shape[-1] for d in data)  # colour mixed with grey: grey is repeated
    data = [
        d
        if d.x_train.shape[-1] == channels
        else dataclasses.replace(
            d, x_train=np.repeat(d.x_train, channels, -1), x_valid=np.repeat(d.x_valid, channels, -1)
        )
        for d in data
    ]
    classes = max(d.num_classes for d in data)

    def pad(arrays):
        n = max(len(a) for a in arrays)
        return np.stack([np.concatenate([a, np.zeros((n - len(a),) + a.shape[1:], a.dtype)]) for a in arrays])

    return {
        "x_train": jnp.asarray(pad([d.x_train.reshape(len(d.x_train), -1) for d in data])),
        "y_train": jnp.asarray(pad([d.y_train for d in data])),
        "n_train": jnp.asarray([len(d.x_train) for d in data]),
        "x_valid": jnp.asarray(pad([d.x_valid.reshape(len(d.x_valid), -1) for d in data])),
        "y_valid": jnp.asarray(pad([d.y_valid for d in data])),
        "n_valid": jnp.asarray([len(d.x_valid) for d in data]),
        "num_classes": classes,
    }


def init_mlp(key: jax.Array, sizes: list[int]) -> dict:
    """``{"dense_i": {"kernel", "bias"}}`` (flax naming, so routing regexes apply)."""
    params = {}
    for i, (k, n_in, n_out) in enumerate(zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:])):
        w = jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out)) / (0.8796 * math.sqrt(n_in))
        params[f"dense_{i}"] = {"kernel": w, "bias": jnp.zeros(n_out)}
    return params


def apply_mlp(params: dict, x: jax.Array, activation) -> jax.Array:
    n = len(params)
    for i in range(n):
        x = x @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"]
        if i < n - 1:
            x = activation(x)
    return x


def cross_entropy(logits: jax.Array, labels: jax.Array, batch: dict | None = None) -> jax.Array:
    """Mean of ``logsumexp(z_i) - z_i[y_i]`` over examples (weighted by ``batch["weights"]`` if given)."""
    per_example = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return example_mean(per_example, batch or {})


def dataset_sampler(data: dict, num_datasets: int, batch_size: int):
    """``(sample_task, batch_from)``: a task picks a data set uniformly; ``batch_from(split)``
    is ``(key, task) -> {"x", "y"}``, rows drawn uniformly with replacement."""

    def sample_task(key):
        return {"dataset": jax.random.randint(key, (), 0, num_datasets)}

    def batch_from(split):
        def sample(key, task):
            d = task["dataset"]
            idx = jax.random.randint(key, (batch_size,), 0, data[f"n_{split}"][d])
            # index (dataset, row) jointly: data[d][idx] would copy a whole data set per member
            return {"x": data[f"x_{split}"][d, idx], "y": data[f"y_{split}"][d, idx]}

        return sample

    return sample_task, batch_from


@register_task_family("image_mlp")
def image_mlp(
    *,
    datasets: list = ("digits",),
    image_size: int = 8,
    hidden: list = (32,),
    activation: str = "relu",
    batch_size: int = 64,
    data_dir: str = "",
) -> TaskFamily:
    """MLP classifiers ``image_size**2 -> hidden -> classes`` over the listed data sets.

    ``data_dir`` is where the local-file data sets (mnist, fashion_mnist, cifar10, svhn) live.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{activation}'; valid choices: {', '.join(ACTIVATIONS)}")
    require_positive(batch_size=batch_size, image_size=image_size, hidden=hidden)
    data = stack_datasets(list(datasets), image_size, data_dir)
    act = ACTIVATIONS[activation]
    sizes = [image_size * image_size] + [int(h) for h in hidden] + [data["num_classes"]]

    sample_task, batch_from = dataset_sampler(data, len(datasets), batch_size)

    def init_params(key, task):
        del task
        return init_mlp(key, sizes)

    def loss(params, task, batch):
        return cross_entropy(apply_mlp(params, batch["x"], act), batch["y"], batch)

    return TaskFamily(
        "image_mlp",
        sample_task,
        init_params,
        batch_from("train"),
        loss,
        loss_scale=math.log(data["num_classes"]),
        valid_batch=batch_from("valid"),
        batch_size=int(batch_size),
    )

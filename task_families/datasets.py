"""Image data sets as in-memory arrays: embedded ones need no download.

Every loader returns a :class:`ImageData` of float32 images in [0, 1] with shape
``[n, height, width, channels]`` and int32 labels, split into train and valid.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evolopt.registry import ConfigError


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


def digits() -> ImageData:
    """scikit-learn's 1797 handwritten 8x8 digits (shipped with the package), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.images[..., None] / 16.0, d.target, 10)


LOADERS = {"digits": digits}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[n, h, w, c]`` images to ``size x size`` (identity if equal)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import jax

    out = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")
    return np.asarray(out, np.float32)


def load(name: str, image_size: int, grey: bool = True) -> ImageData:
    """Load data set ``name`` at ``image_size`` x ``image_size`` (grey: mean over channels)."""
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset '{name}'; valid choices: {', '.join(sorted(LOADERS))}")
    data = LOADERS[name]()

    def prep(x):
        x = resize(x, image_size)
        return x.mean(axis=-1, keepdims=True) if grey else x

    return dataclasses.replace(data, x_train=prep(data.x_train), x_valid=prep(data.x_valid))

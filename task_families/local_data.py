"""Readers for the standard image data sets from a user's local files (no download).

Each reader takes ``data_dir`` and looks for the files in ``data_dir/<name>/``
and then in ``data_dir/`` itself. Only the *training* files are read: like the
Celo tasks (``train[0:80%]``), the loaders split them 80/20 into train and
valid, so the official test sets stay untouched for meta-testing.

Formats (none is a pickle; nothing is unpickled):

- MNIST / Fashion-MNIST: ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]``
  (IDX: 2 zero bytes, a type byte (0x08 = uint8), ``ndim``, then ``ndim``
  big-endian int32 sizes, then the data row-major).
- CIFAR-10: the binary version ``cifar-10-batches-bin/data_batch_{1..5}.bin``
  (records of 1 label byte + 3072 bytes: the 32x32 R, G, B planes).
- SVHN cropped digits: ``train_32x32.mat`` (MATLAB v5, read by scipy.io.loadmat;
  ``X [32, 32, 3, n]``, ``y [n, 1]`` with label 10 meaning digit 0).
- Any of them as ``<name>.npz`` with ``x_train [n, h, w(, c)]`` (``[n, c, h, w]`` is
  accepted for c in 1, 3) and ``y_train [n]``, uint8 pixels or floats in [0, 1].

Every reader returns ``(x [n, h, w, c] float32 in [0, 1], y [n] int32)``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from evolopt.registry import ConfigError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _dirs(data_dir: str, name: str) -> list[Path]:
    root = Path(data_dir).expanduser()
    return [root / name, root]


def _missing(name: str, data_dir: str, expected: str) -> ConfigError:
    if not data_dir:
        return ConfigError(f"dataset '{name}' is read from local files ({expected}): set task_family.data_dir=<folder>")
    where = " or ".join(str(d) for d in _dirs(data_dir, name))
    return ConfigError(f"dataset '{name}' needs {expected} in {where} (task_family.data_dir='{data_dir}')")


def _open(path: Path) -> bytes:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        return f.read()


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array of its declared type and shape."""
    raw = _open(Path(path))
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ConfigError(f"'{path}' is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", ndim, 4))
    data = np.frombuffer(raw, IDX_TYPES[raw[2]], int(np.prod(shape)), 4 + 4 * ndim)
    return data.reshape(shape)


def _find(dirs: list[Path], names: list[str]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _npz(name: str, data_dir: str) -> tuple[np.ndarray, np.ndarray] | None:
    path = _find(_dirs(data_dir, name), [f"{name}.npz"]) if data_dir else None
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as f:
        if "x_train" not in f or "y_train" not in f:
            raise ConfigError(f"'{path}' must hold arrays x_train and y_train; it has {', '.join(f.files)}")
        x, y = f["x_train"], f["y_train"]
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if x.ndim != 4 or len(x) != len(y):
        raise ConfigError(
            f"'{path}': x_train must be [n, h, w(, c)] with n = len(y_train), got {x.shape} and {y.shape}"
        )
    return _to_float(x), np.asarray(y).reshape(-1).astype(np.int32)


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def idx_pair(name: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format training images and labels (MNIST, Fashion-MNIST)."""
    expected = "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (or {name}.npz)".replace("{name}", name)
    found = _npz(name, data_dir)
    if found is not None:
        return found
    dirs = _dirs(data_dir, name) if data_dir else []
    images = _find(dirs, ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte"])
    labels = _find(dirs, ["train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte"])
    if images is None or labels is None:
        raise _missing(name, data_dir, expected)
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(
            f"'{images}' / '{labels}': expected [n, h, w] images and [n] labels, got {x.shape} and {y.shape}"
        )
    return _to_float(x[..., None]), y.astype(np.int32)


def cifar10(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 training batches (binary version, or cifar10.npz)."""
    found = _npz("cifar10", data_dir)
    if found is not None:
        return found
    dirs = []
    for d in _dirs(data_dir, "cifar10") if data_dir else []:
        dirs += [d / "cifar-10-batches-bin", d]
    batches = []
    for d in dirs:
        batches = sorted(d.glob("data_batch_*.bin"))
        if batches:
            break
    if not batches:
        raise _missing("cifar10", data_dir, "cifar-10-batches-bin/data_batch_{1..5}.bin (or cifar10.npz)")
    records = []
    for path in batches:
        raw = np.frombuffer(_open(path), np.uint8)
        if raw.size % 3073:
            raise ConfigError(f"'{path}' is not a CIFAR-10 binary batch (size {raw.size} is not a multiple of 3073)")
        records.append(raw.reshape(-1, 3073))
    rec = np.concatenate(records)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _to_float(x), rec[:, 0].astype(np.int32)


def svhn(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits ``train_32x32.mat`` (or svhn.npz); label 10 is digit 0."""
    found = _npz("svhn", data_dir)
    if found is None:
        path = _find(_dirs(data_dir, "svhn"), ["train_32x32.mat"]) if data_dir else None
        if path is None:
            raise _missing("svhn", data_dir, "train_32x32.mat (or svhn.npz)")
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
        except Exception as e:  # scipy raises several types for a bad file
            raise ConfigError(f"cannot read '{path}' as a MATLAB file: {str(e).splitlines()[0]}") from None
        if "X" not in mat or "y" not in mat:
            raise ConfigError(f"'{path}' must hold X [32, 32, 3, n] and y [n, 1]")
        found = _to_float(np.transpose(mat["X"], (3, 0, 1, 2))), mat["y"].reshape(-1).astype(np.int32)
    x, y = found
    return x, np.where(y == 10, 0, y).astype(np.int32)


READERS = {
    "mnist": lambda data_dir: idx_pair("mnist", data_dir),
    "fashion_mnist": lambda data_dir: idx_pair("fashion_mnist", data_dir),
    "cifar10": cifar10,
    "svhn": svhn,
}

"""Portable theta files, and turning one into an optax optimizer.

A theta file is a NumPy ``.npz`` (read with ``allow_pickle=False``: data, never
code) holding one array per theta leaf, keyed by its '/'-joined dict path, and a
JSON header under ``__evolopt__``: format version, architecture name, the
architecture's configuration and hyperparameters, and provenance. Using a file
needs jax, numpy and optax only.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

FORMAT = "evolopt.theta"
VERSION = 1
HEADER = "__evolopt__"


class ThetaFileError(ValueError):
    """A theta file that is missing, truncated, malformed or of the wrong architecture."""


class _Shape(tuple):
    """A shape as a pytree leaf (a plain tuple would be flattened); nothing is allocated."""


def _flatten(theta: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(theta, dict):
        out = {}
        for k, v in theta.items():
            if "/" in str(k):
                raise ValueError(f"theta key '{k}' contains '/'")
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): theta if isinstance(theta, _Shape) else np.asarray(theta)}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def save_theta_file(path: str | os.PathLike, theta: Any, arch: str, arch_config: dict, **info: Any) -> Path:
    """Write ``theta`` (a nested dict of arrays) atomically to ``path`` (.npz)."""
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "arch": arch, "arch_config": arch_config, **info}
    arrays = _flatten(jax.device_get(theta))
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # never leave a half-written file under the real name
    return path


def load_theta_file(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(theta, header)`` from a theta file; :class:`ThetaFileError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        names = ", ".join(pretrained_names()) or "none"
        raise ThetaFileError(f"theta file '{path}' does not exist (pretrained names: {names})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ThetaFileError(f"'{path}' is not a readable evolopt theta file (truncated or corrupt): {e}") from None
    if HEADER not in arrays:
        raise ThetaFileError(f"'{path}' has no evolopt header; is it an evolopt theta file?")
    try:
        header = json.loads(arrays.pop(HEADER).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ThetaFileError(f"'{path}' has a malformed header: {e}") from None
    if not isinstance(header, dict):
        raise ThetaFileError(f"'{path}' has a malformed header: a JSON object expected, got {type(header).__name__}")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ThetaFileError(
            f"'{path}' has format {header.get('format')!r} version {header.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    for key, kind in (("arch", str), ("arch_config", dict)):
        if not isinstance(header.get(key), kind):
            raise ThetaFileError(
                f"'{path}' has a malformed header: '{key}' must be a {kind.__name__}, got {header.get(key)!r:.80}"
            )
    for name, a in arrays.items():
        if a.dtype.kind not in "fiub":
            raise ThetaFileError(f"'{path}': leaf '{name}' holds {a.dtype} values, not numbers")
    return _unflatten(arrays), header


def check_finite(path: Path | str, theta: Any) -> None:
    """ThetaFileError naming the first leaf with NaN or infinite values."""
    for name, a in _flatten(theta).items():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise ThetaFileError(f"'{path}': leaf '{name}' holds {bad} non-finite values (NaN/inf) of {np.size(a)}")


def check_structure(path: Path | str, arch: str, theta: dict, template: Any) -> None:
    """ThetaFileError naming missing, unexpected and wrong-shaped leaves unless ``theta`` fits ``template``."""
    got = {k: tuple(v.shape) for k, v in _flatten(theta).items()}
    want = {k: tuple(v) for k, v in _flatten(jax.tree.map(lambda s: _Shape(s.shape), template)).items()}
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        raise ThetaFileError(
            f"'{path}' does not fit arch '{arch}': missing {missing[:3]}, unexpected {extra[:3]}, "
            f"wrong shapes {[(k, got[k], want[k]) for k in wrong[:3]]}"
        )


def average_theta_files(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the elementwise mean of several theta files (one arch, one set of options) to ``out``.

    ``theta_out = (1/k) sum_i theta_i``. Independent meta-training runs from one start share the part of
    their move that the meta-gradient explains and not their estimation noise, so their mean keeps the
    first and divides the squared length of the second by ``k`` (experiments/ns_input, round 15).

    Args:
      paths: two or more theta files, run directories or pretrained names.
      out: the file to write (atomically); it may not be one of ``paths``.

    Returns:
      ``out`` as a Path. The header keeps the common arch and options and lists each source's header
      under ``averaged_from``.
    """
    if len(paths) < 2:
        raise ThetaFileError(f"averaging needs two or more theta files, got {len(paths)}")
    resolved = [resolve_path(p) for p in paths]
    out = Path(out)
    if any(out.resolve() == r.resolve() for r in resolved if r.exists()):
        raise ThetaFileError(f"out={out} is one of the files to average; write the mean to a new file")
    loaded = [load_theta_file(r) for r in resolved]
    (first, head0), path0 = loaded[0], resolved[0]
    for (theta, head), path in zip(loaded[1:], resolved[1:]):
        if head["arch"] != head0["arch"]:
            raise ThetaFileError(f"'{path}' holds arch '{head['arch']}', '{path0}' '{head0['arch']}'; cannot average")
        options, options0 = head["arch_config"], head0["arch_config"]
        differ = [
            f"{k} {options.get(k)!r} vs {options0.get(k)!r}"
            for k in sorted({*options, *options0})
            if options.get(k) != options0.get(k)
        ]
        if differ:
            raise ThetaFileError(
                f"'{path}' and '{path0}' differ in arch options ({', '.join(differ)}); "
                "only files of one arch and options can be averaged"
            )
        check_structure(path, head0["arch"], theta, first)  # same leaves and shapes as the first file
    mean = jax.tree.map(
        lambda *leaves: np.mean(np.stack(leaves).astype(np.float64), 0).astype(leaves[0].dtype),
        *[theta for theta, _ in loaded],
    )
    sources = [
        {"path": str(p), **{k: v for k, v in h.items() if k not in ("format", "version", "arch", "arch_config")}}
        for p, (_, h) in zip(resolved, loaded)
    ]
    return save_theta_file(out, mean, head0["arch"], head0["arch_config"], averaged_from=sources)


PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def pretrained_names() -> list[str]:
    """Optimizers shipped with the package, loadable by name (e.g. ``"celo2-cpu"``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.npz"))


def resolve_path(path: str | os.PathLike) -> Path:
    """A theta file path, a run directory (its ``theta.npz``) or a pretrained name."""
    p = Path(path)
    if p.is_dir():
        return p / "theta.npz"
    if not p.exists() and (PRETRAINED_DIR / f"{path}.npz").is_file():
        return PRETRAINED_DIR / f"{path}.npz"
    return p


def _published(reader: Any, path: Path) -> Any:
    try:
        return reader(str(path))
    except (OSError, ValueError) as e:
        raise ThetaFileError(str(e).splitlines()[0]) from None


def load_learned_optimizer(path: str | os.PathLike, arch: str | None = None) -> tuple[Any, dict]:
    """``(LearnedOptimizer, theta)`` from a theta file (or, with ``arch="celo2"``/``"celo2_base"``/``"celo"``,
    the authors' published ``theta.state``), checked against the architecture's theta structure."""
    import evolopt.architectures  # noqa: F401  (registers the built-in architectures)
    from evolopt.registry import ARCHITECTURES

    path = resolve_path(path)
    if arch in ("celo2", "celo2_base") and path.suffix != ".npz":
        from evolopt.architectures import celo2 as celo2_module

        theta, header = _published(celo2_module.load_theta, path), {"arch": arch, "arch_config": {}}
    elif arch == "celo" and path.suffix != ".npz":
        from evolopt.architectures import celo as celo_module

        theta = _published(celo_module.load_theta, path)
        header = {"arch": arch, "arch_config": celo_module.theta_sizes(theta)}
    else:
        theta, header = load_theta_file(path)
    if arch is not None and header["arch"] != arch:
        raise ThetaFileError(f"'{path}' holds a '{header['arch']}' optimizer, not '{arch}'")
    if header["arch"] not in ARCHITECTURES:
        raise ThetaFileError(
            f"'{path}' holds unknown arch '{header['arch']}'; known: {', '.join(ARCHITECTURES.names())}"
        )
    lopt, template = _build(path, header["arch"], header["arch_config"])
    check_structure(path, header["arch"], theta, template)
    check_finite(path, theta)
    return lopt, jax.tree.map(lambda x: np.asarray(x, np.float32), theta)


def _build(path: Path, arch: str, arch_config: dict) -> tuple[Any, Any]:
    """The architecture a header describes and its theta's shapes (nothing allocated); ThetaFileError
    for unknown or mistyped options and sizes the architecture cannot be built with."""
    from evolopt.registry import ARCHITECTURES, ConfigError

    valid = ARCHITECTURES.defaults(arch)
    unknown = sorted(set(arch_config) - set(valid))
    if unknown:
        raise ThetaFileError(
            f"'{path}': unknown option '{unknown[0]}' for arch '{arch}'; valid options: {', '.join(sorted(valid))}"
        )
    try:
        lopt = ARCHITECTURES.build(arch, **arch_config)
        return lopt, jax.eval_shape(lopt.init_theta, jax.random.key(0))
    except ConfigError as e:
        raise ThetaFileError(f"'{path}': {e}") from None
    except (TypeError, ValueError, OverflowError, MemoryError) as e:
        raise ThetaFileError(f"'{path}': arch_config {arch_config} does not build arch '{arch}': {e}") from None


def load_optimizer(
    path: str | os.PathLike, learning_rate: float | None = None, arch: str | None = None, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """An optax optimizer from a theta file written by evolopt (or the authors' published ``theta.state``).

    Args:
      path: a ``.npz`` theta file (e.g. ``runs/x/theta.npz``), a run directory, the name of a
        pretrained optimizer shipped with evolopt (``pretrained_names()``), or with ``arch="celo2"``,
        ``"celo2_base"`` or ``"celo"`` the authors' published ``theta.state``.
      learning_rate: overrides the file's learning rate (the architecture's step size).
      arch: if given, the file must hold this architecture.
      **overrides: other hyperparameters of the architecture (e.g. ``weight_decay``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; pass ``loss=`` to ``update`` for
      architectures that use it (it is ignored by the others).
    """
    if isinstance(overrides.get("overrides"), dict):  # optax.inject_hyperparams passes **overrides by name
        overrides = {**overrides.pop("overrides"), **overrides}
    if learning_rate is not None:
        overrides["learning_rate"] = learning_rate
    lopt, theta = _cached_load(path, arch)
    return lopt.optimizer(theta, **overrides)


_CACHE: dict[tuple, tuple[Any, dict]] = {}


def _cached_load(path: str | os.PathLike, arch: str | None) -> tuple[Any, dict]:
    """:func:`load_learned_optimizer`, read once per file version (inject_hyperparams calls the factory
    at every update)."""
    resolved = resolve_path(path)
    try:
        st = resolved.stat()
        key = (str(resolved.resolve()), st.st_mtime_ns, st.st_size, arch)
    except OSError:
        return load_learned_optimizer(path, arch)
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = load_learned_optimizer(path, arch)
    return _CACHE[key]

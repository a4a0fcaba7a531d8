"""Where compiled XLA programs are kept between processes (``compile_cache``).

A generation step with a learned rule takes a while to compile (its per-element MLP is compiled
once per parameter tensor of the task). jax can keep compiled programs on disk and load them in the
next process whose program and compile options are the same (its persistent compilation cache, keyed
by both), so a resumed run, a rerun, a sweep's later jobs and repeated evaluations skip most of it: a
rerun of README's main job took 34 s instead of 57-62 on a 2-core CPU. Loaded programs are the ones
compiled before: results do not change.

``compile_cache``:

* ``auto`` (default): ``$JAX_COMPILATION_CACHE_DIR`` (or a directory set with ``jax.config``) if
  there is one, else ``$XDG_CACHE_HOME/evolopt/xla`` (``~/.cache/evolopt/xla``), kept under
  ``AUTO_MAX_BYTES`` by deleting the least recently written entries when a run starts;
* a directory: that one, never pruned by evolopt;
* ``null`` (or ``off``, ``false``, ``none``, ``no``, any case): no cache. A directory with one of those
  names is written as a path: ``./off``.

jax writes an entry only for programs that took over a second to compile, only from process 0 of
a multi-process run, and in place (no temporary file and rename): an entry cut short by a process
killed while writing it fails to load with a warning naming the program, which is compiled again,
and jax never replaces an entry. So in its auto directory evolopt reads back, at each run start,
the entries written since the last check, and deletes any that no longer decompress: the next run
writes them afresh (``drop_unreadable``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jax

from evolopt.registry import ConfigError

AUTO_MAX_BYTES = 2 << 30  # 2 GiB; README's main job writes ~2.3 MB
ENTRY_SUFFIX = "-cache"  # jax's file cache names its entries <key>-cache
CHECKED = ".evolopt-checked"  # its mtime: entries written before it have been read back whole
OFF_WORDS = ("off", "false", "none", "null", "no")  # what users type for "no cache" (not a directory named so)


def auto_dir() -> Path:
    """evolopt's own cache directory: ``$XDG_CACHE_HOME/evolopt/xla``, else ``~/.cache/evolopt/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "evolopt" / "xla"


def check(value: Any) -> None:
    """Raise ConfigError in one line unless ``value`` is ``auto``, off (``None``, ``False``, ``OFF_WORDS``) or a
    directory path."""
    if is_off(value) or (isinstance(value, str) and value.strip()):
        return
    raise ConfigError(f"compile_cache={value!r}; valid choices: auto, a directory path, off or null (no cache)")


def is_off(value: Any) -> bool:
    """Whether ``value`` turns the cache off: ``None``, ``False`` or one of ``OFF_WORDS`` (a Hydra user's ``off``
    would otherwise become a directory named ``off``)."""
    return value is None or value is False or (isinstance(value, str) and value.strip().lower() in OFF_WORDS)


def resolve(value: Any) -> tuple[Path | None, bool]:
    """``(directory, owned)`` that ``value`` asks for; ``owned``: evolopt's auto directory (pruned)."""
    check(value)
    if is_off(value):
        return None, False
    if value != "auto":
        return Path(value).expanduser(), False
    chosen = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser(), False
    return auto_dir(), True


def prune(directory: Path, max_bytes: int) -> int:
    """Delete the least recently written cache entries of ``directory`` until it holds at most
    ``max_bytes`` of them; returns how many were deleted. Entries other processes are reading stay
    readable (POSIX), and one deleted just before a read is a cache miss."""
    entries = []
    for path in directory.glob(f"*{ENTRY_SUFFIX}"):
        try:
            st = path.stat()
        except OSError:  # deleted meanwhile by another run's prune
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total, deleted = sum(size for _, size, _ in entries), 0
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total, deleted = total - size, deleted + 1
    return deleted


def drop_unreadable(directory: Path) -> int:
    """Delete the entries of ``directory`` written since the last check (the mtime of its ``CHECKED``
    file) that do not decompress (cut short: jax writes in place); returns how many. Each entry is read
    once, so a large cache costs its reading only on the first check."""
    from jax._src import compilation_cache

    marker = directory / CHECKED
    since = marker.stat().st_mtime if marker.exists() else 0.0
    started, dropped = time.time(), 0
    for path in directory.glob(f"*{ENTRY_SUFFIX}"):
        try:
            if path.stat().st_mtime < since:
                continue
            compilation_cache.decompress_executable(path.read_bytes())
        except FileNotFoundError:  # deleted meanwhile by another run
            continue
        except Exception:  # zlib.error, ZstdError: a truncated or damaged entry
            path.unlink(missing_ok=True)
            dropped += 1
    marker.touch()
    os.utime(marker, (started, started))  # entries written during this check are read at the next
    return dropped


def configure(value: Any) -> Path | None:
    """Point jax's persistent compilation cache at the directory ``value`` resolves to; returns it
    (None: no cache). A directory that cannot be created is a ConfigError when asked for by name; the
    auto directory is then left off (returns None), as it is when it cannot be checked or trimmed.
    Takes effect for the programs compiled after it."""
    from jax._src import compilation_cache

    directory, owned = resolve(value)
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if owned:
                directory = None
            else:
                raise ConfigError(f"compile_cache={value!r}: cannot create it ({e.strerror})") from None
    if directory is not None and owned:
        try:
            drop_unreadable(directory)
            prune(directory, AUTO_MAX_BYTES)
        except OSError:  # e.g. a read-only home: no cache rather than no run
            directory = None
    wanted = None if directory is None else str(directory)
    if jax.config.jax_compilation_cache_dir != wanted:
        jax.config.update("jax_compilation_cache_dir", wanted)
        compilation_cache.reset_cache()  # jax reads the directory once per process, at its first compile
    return directory

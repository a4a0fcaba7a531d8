"""``compile_cache``: a second run loads its compiled programs instead of compiling them, with the same
numbers; entries cut short (a process killed while jax wrote them) are dropped and written anew."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from evolopt import compile_cache
from evolopt.progress import start_line
from evolopt.registry import ConfigError


def _numbers(run_dir) -> list[dict]:
    """Every metric of every generation except wall-clock ones."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timing = ("time", "per_s", "seconds", "elapsed")
    return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows]


def test_settings_resolve_to_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.auto_dir() == tmp_path / "xdg" / "evolopt" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.auto_dir() == Path.home() / ".cache" / "evolopt" / "xla"
    assert compile_cache.resolve(None) == (None, False)
    assert compile_cache.resolve(str(tmp_path / "mine")) == (tmp_path / "mine", False)
    # auto: a directory the user gave jax (here the test session's, from $JAX_COMPILATION_CACHE_DIR) wins
    assert compile_cache.resolve("auto") == (Path(os.environ["JAX_COMPILATION_CACHE_DIR"]), False)
    for off in (None, False, "off", "OFF", " none ", "null", "false", "no"):  # a Hydra user's off, not a directory
        assert compile_cache.resolve(off) == (None, False), off
    assert compile_cache.resolve("./off") == (Path("off"), False)  # a directory named so: as a path
    for bad in (3, "", True):
        with pytest.raises(ConfigError, match=r"compile_cache=.*valid choices: auto, a directory path, off or null"):
            compile_cache.check(bad)


def test_a_directory_that_cannot_be_made_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^compile_cache='.*file/xla': cannot create it \(Not a directory\)$"):
        compile_cache.configure(str(blocker / "xla"))


def test_an_auto_directory_that_cannot_be_checked_leaves_the_cache_off(tmp_path, monkeypatch):
    import jax

    def read_only(directory):
        raise PermissionError(13, "Permission denied", str(directory / compile_cache.CHECKED))

    saved = jax.config.jax_compilation_cache_dir  # this test session's cache, given back below
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setattr(compile_cache, "drop_unreadable", read_only)
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache.configure("auto") is None  # a run without a cache, not a stopped run
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        assert compile_cache.configure(saved) == Path(saved)


def test_prune_deletes_the_least_recently_written_entries_first(tmp_path):
    sizes = {"a": 400, "b": 300, "c": 200, "d": 100}  # written in this order
    for i, (name, size) in enumerate(sizes.items()):
        path = tmp_path / f"jit_{name}-{name * 8}-cache"
        path.write_bytes(b"x" * size)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "notes.txt").write_bytes(b"y" * 5000)  # not an entry: never counted nor deleted
    assert compile_cache.prune(tmp_path, 350) == 2  # 1000 bytes: drop a (400), then b (300): 300 left
    assert sorted(p.name[4] for p in tmp_path.glob("jit_*")) == ["c", "d"]
    assert (tmp_path / "notes.txt").exists()
    assert compile_cache.prune(tmp_path, 300) == 0


def test_entries_cut_short_since_the_last_check_are_dropped(tmp_path):
    from jax._src import compilation_cache as jax_cache

    whole = jax_cache.compress_executable(b"\x00\x00\x00\x02" + b"an executable " * 200)
    for name, data, mtime in [("old_cut", whole[:40], 1000), ("new_whole", whole, 3000), ("new_cut", whole[:40], 3000)]:
        path = tmp_path / f"jit_{name}-{name}-cache"
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
    (tmp_path / compile_cache.CHECKED).touch()
    os.utime(tmp_path / compile_cache.CHECKED, (2000, 2000))  # checked between the old and the new entries
    assert compile_cache.drop_unreadable(tmp_path) == 1
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*-cache")) == ["jit_new_whole", "jit_old_cut"]
    assert compile_cache.drop_unreadable(tmp_path) == 0  # read once: the next check starts after this one
    os.remove(tmp_path / compile_cache.CHECKED)  # never checked: every entry is read
    assert compile_cache.drop_unreadable(tmp_path) == 1
    assert [p.name.split("-")[0] for p in tmp_path.glob("*-cache")] == ["jit_new_whole"]


def test_start_line_names_the_cache(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "strategy": {"name": "pes"},
            "arch": {"name": "celo2"},
            "task_family": {"name": "quadratic"},
            "population_size": 8,
            "generations": 3,
            "seed": 0,
        }
    )
    assert start_line(cfg, "r", False, "1 cpu device(s)", tmp_path).endswith(
        f"; compile cache {tmp_path}; compiling..."
    )
    assert start_line(cfg, "r", False, "1 cpu device(s)", None).endswith("; no compile cache; compiling...")


@pytest.mark.slow
def test_second_run_loads_its_programs_and_entries_cut_short_are_written_anew(tmp_path):
    env = {
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "JAX_COMPILATION_CACHE_DIR": "",  # none given to jax: auto is evolopt's own directory
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    args = [*TINY, "generations=3", "evaluation.every=3"]

    def run(name: str, **extra: str):
        result = run_cli(*args, f"run_dir={tmp_path / name}", env={**env, **extra})
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    first = run("first")
    cache = tmp_path / "xdg" / "evolopt" / "xla"
    assert f"; compile cache {cache}; compiling..." in first.stderr
    entries = sorted(cache.glob("*-cache"))
    assert any(p.name.startswith("jit_step-") for p in entries), [p.name for p in entries]

    second = run("second", JAX_LOG_COMPILES="1")
    assert "Persistent compilation cache hit for 'jit_step'" in second.stderr
    assert _numbers(tmp_path / "second") == _numbers(tmp_path / "first")

    from jax._src import compilation_cache as jax_cache

    names = sorted(p.name for p in entries)
    for path in entries:  # what a process killed while jax wrote them leaves: each entry cut in half
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    third = run("third")  # drops them at its start (jax would warn and never replace them), writes them anew
    assert "Error reading persistent compilation cache entry" not in third.stderr
    assert sorted(p.name for p in cache.glob("*-cache")) == names
    for path in cache.glob("*-cache"):  # each whole again (serialisations differ by a few bytes between runs)
        jax_cache.decompress_executable(path.read_bytes())
    assert _numbers(tmp_path / "third") == _numbers(tmp_path / "first")

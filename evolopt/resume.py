"""How a run starts or resumes in its run dir, safely: what the dir may hold, whether it is
a resume, the lock, config.yaml, and cleaning up after a full disk.

A dir with no checkpoint but only files a run writes (a run killed during start-up or
before its first checkpoint) is started afresh by the same command; anything else in it
is refused. Every decision is taken again under the lock, by every process.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from evolopt import distributed
from evolopt.checkpoint import CORRUPT_DIR, Checkpointer, has_checkpoint
from evolopt.registry import ConfigError
from evolopt.run_dir import (
    LOCK_NAME,
    TMP_PREFIX,
    RunAborted,
    RunLock,
    atomic_write_text,
    disk_error,
    fault,
    remove_temp_files,
)

# Keys that may change when a run is resumed.
RESUMABLE_CHANGES = {
    "generations",
    "resume",
    "progress",
    "run_dir",
    "plugins",
    "checkpoint_every",
    "keep_checkpoints",
    "time_budget_minutes",
    "member_chunks",  # same numbers, different memory use
    "distributed",  # the population splits over any number of processes with the same numbers
    "cpu_devices",  # and over any number of devices
    "compile_cache",  # the same programs, loaded instead of compiled
}


# Keys added after runs were written: a saved config without one ran with this value
# ((None, key): a top-level key).
ADDED_KEYS = {("unroll", "valid_share"): 0.5, (None, "cpu_reassociate"): False, (None, "cpu_vector_width"): None}

# Every name a run writes in its run dir (anything else there means it is not ours).
RUN_FILES = {"config.yaml", "metrics.jsonl", "tb", "checkpoints", "theta.npz", "theta.npz.tmp", "meta_training.png"}
RUN_FILES |= {LOCK_NAME, CORRUPT_DIR}


def _check_resumable(run_dir: Path, cfg: DictConfig) -> None:
    path = run_dir / "config.yaml"
    if not path.is_file() or path.stat().st_size == 0:  # a kill before it was written: this command writes it
        return
    saved = OmegaConf.to_container(OmegaConf.load(path))
    for (group, key), value in ADDED_KEYS.items():
        if group is None:
            saved.setdefault(key, value)
        elif isinstance(saved.get(group), dict):
            saved[group].setdefault(key, value)
    now = OmegaConf.to_container(cfg)
    for key in sorted(set(saved) | set(now)):
        if key not in RESUMABLE_CHANGES and saved.get(key) != now.get(key):
            old, new = _as_override(saved.get(key)), _as_override(now.get(key))
            raise ConfigError(
                f"run_dir '{run_dir}' holds a run with {key}={old}, not {new}; "
                "resume it with its own config or choose a new run_dir"
            )


def _as_override(value: object) -> str:
    """``value`` as a command-line override writes it (``null``, ``true``), so the message can be copied."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _foreign_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that no evolopt run writes (a run killed early leaves only its own)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith(TMP_PREFIX))


def prepare_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """``(run_dir, resuming)``, refusing anything that would overwrite another run.

    A run dir with no checkpoint yet but only a run's own files (killed during start-up
    or before its first checkpoint) is started afresh by the same command."""
    run_dir = Path(cfg.run_dir)
    resume = str(cfg.resume).lower()
    if resume not in ("auto", "true", "false"):
        raise ConfigError(f"bad resume '{cfg.resume}'; valid choices: auto, true, false")
    exists = has_checkpoint(run_dir / "checkpoints")
    if resume == "true" and not exists:
        raise ConfigError(f"resume=true but run_dir '{run_dir}' holds no checkpoint")
    if exists and resume == "false":
        raise ConfigError(f"run_dir '{run_dir}' already holds a run; pass resume=true or choose a new run_dir")
    foreign = _foreign_files(run_dir)
    if not exists and foreign:
        raise ConfigError(
            f"run_dir '{run_dir}' exists and is not an evolopt run (it holds {', '.join(foreign[:3])}); "
            "choose a new run_dir"
        )
    _check_resumable(run_dir, cfg)
    return run_dir, exists


def open_run_dir(cfg: DictConfig, main: bool) -> tuple[RunLock, Path, bool]:
    """Create the run dir, take its lock (process 0), decide again under the lock whether
    this is a resume, and write config.yaml atomically."""
    run_dir = Path(cfg.run_dir)
    lock = RunLock(run_dir)
    error = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire()
        except ConfigError as e:
            error = e
    if distributed.agree(error is not None):  # every process stops if process 0 has no lock
        raise error or ConfigError(f"run_dir '{run_dir}' is in use (process 0 could not take its lock)")
    fault("startup")
    distributed.barrier("evolopt:run-dir-locked")
    run_dir, resuming = prepare_run_dir(cfg)  # another run may have written before we locked
    distributed.barrier("evolopt:run-dir-checked")  # nobody writes before every process has looked
    if main:
        remove_temp_files(run_dir)
        config = run_dir / "config.yaml"
        if resuming and config.is_file() and config.stat().st_size:  # record a changed horizon only
            saved = OmegaConf.load(config)
            saved.generations = cfg.generations
            atomic_write_text(config, OmegaConf.to_yaml(saved))
        else:
            atomic_write_text(config, OmegaConf.to_yaml(cfg))
    distributed.barrier("evolopt:run-dir-ready")
    return lock, run_dir, resuming


def _empty_file(p: Path) -> bool:
    return p.is_file() and p.stat().st_size == 0


def disk_full(run_dir: Path, main: bool, e: Exception) -> RunAborted | None:
    err = disk_error(e)
    if err is None:
        return None
    if main:  # no half files: a theta file cut short, empty event files, orbax's temporary folders
        for leftover in [*run_dir.glob("*.tmp"), *(p for p in run_dir.rglob("*") if _empty_file(p))]:
            if "checkpoints" not in leftover.relative_to(run_dir).parts:
                leftover.unlink(missing_ok=True)
        remove_temp_files(run_dir)
        Checkpointer.remove_partial_in(run_dir / "checkpoints")
    where = f" ({err.filename})" if err.filename else ""
    return RunAborted(
        f"cannot write to run_dir '{run_dir}': {err.strerror}{where}. The last complete checkpoint is kept; "
        "free space (or fix permissions) and run the same command to resume"
    )

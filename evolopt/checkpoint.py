"""Orbax checkpoints of the whole meta-training state (strategy, inner states, RNG, generation).

Orbax writes each step into a temporary folder and renames it when complete, so a
kill mid-write never leaves a step that looks finished. A step that is there but
does not restore (a truncated or damaged file) is set aside and the newest one that
restores is used: with ``keep >= 2`` there is always an older one to fall back to.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from evolopt.run_dir import fault

CORRUPT_DIR = "corrupt_checkpoints"  # next to checkpoints/: set-aside steps, for a post-mortem


class Checkpointer:
    """Keeps the newest ``keep`` checkpoints under ``directory``, one per saved generation."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.manager = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True, cleanup_tmp_directories=True),
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, generation: int, state: Any) -> None:
        # orbax logs every failed write thread with its traceback (dozens on a full disk);
        # the error itself still reaches the caller, who reports it in one line
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.CRITICAL)
        try:
            self.manager.save(generation, args=ocp.args.StandardSave(state))
            fault("save:checkpoint")  # a kill here is a kill while orbax writes
            self.manager.wait_until_finished()  # a checkpoint is complete before training moves on
        finally:
            absl.setLevel(level)
        fault("saved:checkpoint")

    @staticmethod
    def remove_partial_in(directory: Path) -> None:
        """Orbax's temporary folders of a save that failed (the complete steps stay)."""
        for p in Path(directory).glob("*orbax-checkpoint-tmp*"):
            shutil.rmtree(p, ignore_errors=True)

    def restore(self, template: Any, generation: int | None = None) -> Any:
        """Restore into the structure, dtypes and shardings of ``template``."""
        generation = self.latest() if generation is None else generation
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(generation, args=ocp.args.StandardRestore(abstract))

    def restore_newest_valid(self, template: Any, note: Callable[[str], None] = print, set_aside: bool = True) -> Any:
        """The newest checkpoint that restores, saying in one line each which newer ones do
        not (``set_aside``: moved to ``../corrupt_checkpoints/``, so that training can save
        those generations again). ValueError if none restores."""
        bad = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(template, step)
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                bad.append(step)
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                note(f"checkpoint of generation {step} does not restore ({reason}); trying an older one")
                continue
            if bad and set_aside:
                self._set_aside(bad)
                note(f"resuming from generation {step}, the newest checkpoint that restores")
            return state
        raise ValueError(f"no checkpoint in '{self.directory}' restores (tried generations {bad})")

    def _set_aside(self, steps: list[int]) -> None:
        self.manager.close()
        corrupt = self.directory.parent / CORRUPT_DIR
        corrupt.mkdir(exist_ok=True)
        for step in steps:
            target = corrupt / str(step)
            shutil.rmtree(target, ignore_errors=True)
            (self.directory / str(step)).rename(target)
        self.manager = self._manager()

    def close(self) -> None:
        self.manager.close()


def has_checkpoint(directory: str | Path) -> bool:
    d = Path(directory)
    return d.is_dir() and any(p.is_dir() and p.name.isdigit() for p in d.iterdir())

"""Orbax checkpoints of the whole meta-training state (strategy, inner states, RNG, generation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the newest ``keep`` checkpoints under ``directory``, one per saved generation."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, generation: int, state: Any) -> None:
        self.manager.save(generation, args=ocp.args.StandardSave(state))
        self.manager.wait_until_finished()  # a checkpoint is complete before training moves on

    def restore(self, template: Any, generation: int | None = None) -> Any:
        """Restore into the structure, dtypes and shardings of ``template``."""
        generation = self.latest() if generation is None else generation
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(generation, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self.manager.close()


def has_checkpoint(directory: str | Path) -> bool:
    d = Path(directory)
    return d.is_dir() and any(p.is_dir() and p.name.isdigit() for p in d.iterdir())

"""The run's config in TensorBoard's text tab (evaluation curves are tags of the run:
see :meth:`evolopt.logger.RunLogger.curves`)."""

from __future__ import annotations

from typing import Any


def write_config(writer: Any, cfg: Any) -> None:
    """The run's config in TensorBoard's text tab (as YAML, in a code block)."""
    from omegaconf import OmegaConf

    if writer is None:
        return
    text = OmegaConf.to_yaml(cfg)
    writer.text("config", "```\n" + text + "\n```", 0)

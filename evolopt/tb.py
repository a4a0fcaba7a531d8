"""TensorBoard writing that keeps a run one run: config as text, evaluation curves as tags.

tensorboardX's ``add_scalars`` writes each curve as a separate run (a folder per
curve), which fills TensorBoard's run list; here each curve is a tag
``eval_curve/gen_<N>/<name>`` of the run's own writer.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def write_config(writer: Any, cfg: Any) -> None:
    """The run's config in TensorBoard's text tab (as YAML, in a code block)."""
    from omegaconf import OmegaConf

    if writer is None:
        return
    text = OmegaConf.to_yaml(cfg)
    writer.add_text("config", "```\n" + text + "\n```", 0)


def write_curves(writer: Any, generation: int, curves: dict[str, np.ndarray]) -> None:
    """Loss-vs-inner-step curves of one evaluation as scalars of this run."""
    if writer is None:
        return
    for name, values in curves.items():
        for step, v in enumerate(np.asarray(values).tolist()):
            writer.add_scalar(f"eval_curve/gen_{generation:06d}/{name}", float(v), step)

"""Where a theta file came from: the header fields every file a run writes carries.

``provenance(cfg, run_dir)`` gives the task family and strategy with their options
(the architecture and its options are the header's ``arch``/``arch_config``), the
seed, the versions of evolopt, jax, evosax and optax, the git commit of the evolopt
source when it is a git checkout (``+dirty`` with uncommitted changes), the run dir,
the time, and the last evaluation the mean theta passed during the run (its
meta-loss, and which loss that is, next to Adam's at ``evaluation.adam_lr`` on the same
validation tasks).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evolopt.summary import meta_loss_of, meta_weight_of, objective_name, valid_share_of


def versions() -> dict[str, str | None]:
    out = {}
    for name in ("evolopt", "jax", "evosax", "optax"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the evolopt source (``<sha>+dirty`` with local changes); None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "-uno"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


def last_evaluation(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The newest metrics.jsonl row with the mean theta's meta-loss, as the header's ``evaluation``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    row = None
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a half-written last line
            continue
        if not math.isnan(r.get("meta_loss/mean_theta", math.nan)):
            row = r
    if row is None:
        return None
    ev = cfg.evaluation
    settings = f"unroll.meta_loss={meta_loss_of(cfg)}, unroll.meta_weight={meta_weight_of(cfg)}"
    if meta_loss_of(cfg) == "both" and valid_share_of(cfg) != 0.5:
        settings += f", unroll.valid_share={valid_share_of(cfg):g}"
    out = {
        "generation": row["generation"],
        "meta_loss": row["meta_loss/mean_theta"],
        "meta_loss_is": f"mean normalised {objective_name(cfg)} over the steps ({settings})",
        "adam_meta_loss": row.get("meta_loss/adam"),
        "adam_lr": ev.adam_lr,
        "tasks": f"{ev.num_tasks} validation tasks of {cfg.task_family.name}, {ev.steps} steps",
    }
    if "meta_loss/mean_theta_train" in row:  # not the plain training loss: that too, named as such
        out["train_loss"] = row["meta_loss/mean_theta_train"]
    return out


def _group(cfg: DictConfig, group: str) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg[group], resolve=True)
    return {"name": node.pop("name"), "config": node}


def provenance(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Header fields for a theta file written from the run ``cfg`` (see the module doc)."""
    out = {
        "task_family": _group(cfg, "task_family"),
        "strategy": _group(cfg, "strategy"),
        "seed": cfg.seed,
        "theta_init": str(cfg.get("theta_init", "random")),
        "versions": versions(),
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if run_dir is not None:
        out["run_dir"] = str(run_dir)
        evaluation = last_evaluation(Path(run_dir), cfg)
        if evaluation is not None:
            out["evaluation"] = evaluation
    return out

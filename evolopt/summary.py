"""The last lines of a run: what was compared with what, the run's files, the next commands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LOSS_NAMES = {  # what each unroll.meta_loss scores
    "train": "training loss",
    "valid": "validation loss",
    "both": "mean of training and validation loss",
}


def _rows(run_dir: Path) -> list[dict]:
    import json

    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a half-written last line
            continue
    return rows


def meta_loss_of(cfg: Any) -> str:
    """The run's ``unroll.meta_loss`` (``train`` for configs written before it existed)."""
    return str((cfg.get("unroll") or {}).get("meta_loss", "train"))


def meta_weight_of(cfg: Any) -> str:
    """The run's ``unroll.meta_weight`` (``uniform`` for configs written before it existed)."""
    return str((cfg.get("unroll") or {}).get("meta_weight", "uniform"))


def valid_share_of(cfg: Any) -> float:
    """The run's ``unroll.valid_share`` (0.5 for configs written before it existed)."""
    return float((cfg.get("unroll") or {}).get("valid_share", 0.5))


def objective_name(cfg: Any) -> str:
    """What the run's meta-loss is, in words: e.g. ``validation loss`` or, under
    ``unroll.meta_weight=linear``, ``validation loss, steps weighted 2(t+1)/(T+1)``."""
    loss = LOSS_NAMES[meta_loss_of(cfg)]
    share = valid_share_of(cfg)
    if meta_loss_of(cfg) == "both" and share != 0.5:
        loss = f"{1 - share:g} x training loss + {share:g} x validation loss"
    return loss if meta_weight_of(cfg) == "uniform" else f"{loss}, steps weighted 2(t+1)/(T+1)"


def summarize(run_dir: str | Path, cfg: Any = None) -> str:
    """A few lines: the mean theta's meta-loss (the loss ``unroll.meta_loss`` names) first -> last
    next to Adam's at the (untuned) evaluation rate on the same validation tasks, the run's files,
    and how to use them."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml") if cfg is None else cfg
    ev = cfg.evaluation
    loss = objective_name(cfg)
    rows = [r for r in _rows(run_dir) if not math.isnan(r.get("meta_loss/mean_theta", math.nan))]
    lines = [f"run saved to {run_dir}"]
    if rows:
        first, last = rows[0], rows[-1]
        lines[0] += (
            f": meta-loss ({loss}) of the mean theta {first['meta_loss/mean_theta']:.4f} "
            f"(generation {first['generation']}) -> {last['meta_loss/mean_theta']:.4f} "
            f"(generation {last['generation']})"
        )
        if "meta_loss/mean_theta_train" in first and "meta_loss/mean_theta_train" in last:
            lines.append(
                f"  its training loss (not the objective): {first['meta_loss/mean_theta_train']:.4f} "
                f"-> {last['meta_loss/mean_theta_train']:.4f}"
            )
        if "meta_loss/adam" in last:
            lines.append(
                f"  compared with Adam at lr {ev.adam_lr:g} (one fixed rate, not tuned) on the same "
                f"{ev.num_tasks} validation tasks of {cfg.task_family.name} ({ev.steps} steps): "
                f"{last['meta_loss/adam']:.4f} (lower is better; a tuned comparison: evolopt-evaluate below)"
            )
    files = [
        ("theta.npz", "the learned optimizer"),
        ("meta_training.png", "fitness and meta-loss plot"),
        ("metrics.jsonl", "one line per generation"),
        ("tb", "TensorBoard logs"),
        ("config.yaml", "the config; the same command resumes"),
    ]
    lines.append("  files: " + "; ".join(f"{name} ({what})" for name, what in files if (run_dir / name).exists()))
    theta = run_dir / "theta.npz"
    lines += [
        "  next:",
        f"    tensorboard --logdir {run_dir / 'tb'}",
        f"    python -c \"import evolopt; opt = evolopt.load_optimizer('{theta}')\"  # an optax optimizer",
        f"    evolopt-evaluate optimizer={run_dir} suite=tiny  # vs lr-tuned adam, adamw, sgdm, muon (heldout: longer)",
    ]
    return "\n".join(lines)

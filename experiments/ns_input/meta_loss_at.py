"""A theta's in-run validation meta-loss on a run's own 8 validation tasks (round 15).

    python experiments/ns_input/meta_loss_at.py RUN_DIR THETA.npz [THETA.npz ...]

Rebuilds the evaluation `evolopt.train` logs as `meta_loss/mean_theta` (the run's config, its seed's fixed
validation tasks, `evaluation.steps` steps, the run's meta-loss) and applies it to each theta file, beside the
run's start (`theta_init`). An averaged file has no run of its own; this scores it on each of its runs' tasks.
Evaluating the run's own final theta reproduces its logged generation-`generations` value (a check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from evolopt.config import import_plugins_for_run
from evolopt.export import load_theta_file
from evolopt.loop import build, validation_evaluator


def main(run_dir: Path, thetas: list[str]) -> None:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    import_plugins_for_run(cfg)
    trainer, theta0 = build(cfg)
    evaluate, key = validation_evaluator(cfg, trainer)  # exactly what the run logged as meta_loss/mean_theta
    start = float(evaluate(theta0, key).weighted().mean())
    print(f"{run_dir}: start ({cfg.theta_init}) {start:.5f}")
    for path in thetas:
        loss = float(evaluate(load_theta_file(path)[0], key).weighted().mean())
        print(f"  {path}: {loss:.5f} ({100 * (loss / start - 1):+.1f}% vs start)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])

"""``evolopt-train [KEY=VALUE ...]`` (or ``python -m evolopt.train``): meta-train a learned optimizer.

    evolopt-train strategy=open_es arch=small_fc_lopt task_family=image_mlp \\
        population_size=32 generations=200 seed=0 run_dir=runs/x
    evolopt-train -m strategy.sigma=0.01,0.03 run_dir=runs/sweep     # runs/sweep/0, runs/sweep/1
    evolopt-train --cfg job task_family=quadratic                    # print the composed config

A Hydra application (:mod:`evolopt.cli`): ``--cfg``, ``-m`` with Hydra's launchers and
sweepers. Bad input prints one line naming the bad value and the valid choices, exits
2, and creates nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from evolopt.cli import Argv, job_dir, run_hydra
from evolopt.registry import ConfigError
from evolopt.run_dir import RunAborted

PROG = "evolopt.train"


def _prepare(args: Argv) -> None:
    from evolopt import cpu_devices, distributed
    from evolopt.config import import_plugins, plugins_from, store_group_options

    if args.runs_task:
        distributed.initialize_from_overrides(args.overrides)  # before any import that touches a device
        cpu_devices.configure_from_overrides(args.overrides)  # before the CPU backend starts, as distributed
    import_plugins(plugins_from(args.overrides))
    store_group_options()


def _validate(overrides: list[str]) -> None:
    from evolopt.config import load_config
    from evolopt.loop import check_config

    check_config(load_config(overrides))


def train_job(cfg: Any) -> float:
    """One Hydra job: meta-train ``cfg``; returns the final meta-loss of the mean theta (what a sweeper minimises)."""
    from evolopt import distributed
    from evolopt.loop import meta_train
    from evolopt.summary import summarize

    cfg.run_dir = job_dir(cfg.run_dir)
    try:
        run_dir = meta_train(cfg)
    except RunAborted as e:  # signal, full disk, non-finite theta: one line (evolopt/run_dir.py)
        print(f"{PROG}: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C before the run's own handler is installed
        print(f"{PROG}: interrupted; the same command resumes from the last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:  # a broken collective: say so in one line, not only in a traceback
        import jax

        if isinstance(e, ConfigError) or not (
            jax.distributed.is_initialized() and isinstance(e, jax.errors.JaxRuntimeError)
        ):
            raise
        print(
            f"{PROG}: error: process {jax.process_index()} of {jax.process_count()} lost contact with "
            f"the others ({str(e).splitlines()[0][:200]}); restart every process with the same command to "
            "resume from the last checkpoint",
            file=sys.stderr,
        )
        raise SystemExit(3) from None
    if distributed.is_main_process():
        print(summarize(run_dir, cfg))
    return final_meta_loss(run_dir)


def final_meta_loss(run_dir: Any) -> float:
    """The last recorded meta-loss of the mean theta (NaN if none)."""
    import math
    from pathlib import Path

    from evolopt.logger import read_jsonl

    path = Path(run_dir) / "metrics.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    values = [r["meta_loss/mean_theta"] for r in rows if not math.isnan(r.get("meta_loss/mean_theta", math.nan))]
    return float(values[-1]) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        from evolopt.cli import split_argv
        from evolopt.config import help_text, plugins_from

        try:
            print(help_text(plugins_from(split_argv(argv).overrides)))
        except ConfigError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        return 0
    return run_hydra(PROG, argv, "config", "run_dir", _prepare, _validate, train_job)


if __name__ == "__main__":
    sys.exit(main())

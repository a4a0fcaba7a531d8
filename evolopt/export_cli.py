"""``evolopt-export`` (also ``python -m evolopt.export_cli``):

- ``evolopt-export run_dir=DIR [out=FILE.npz] [generation=N]``: write a run's mean theta (latest or a
  given checkpoint) as a portable theta file;
- ``evolopt-export info=FILE``: print a theta file's header (architecture, where it came from);
- ``evolopt-export 'average=[A,B,...]' out=FILE.npz``: write the elementwise mean of theta files (runs of
  one arch and options, e.g. several seeds of one recipe); ``average=SWEEP_DIR`` averages every job of a
  seed sweep (``evolopt-train -m seed=0,1,2,3 run_dir=SWEEP_DIR``).

The theta file format and loading live in :mod:`evolopt.export`, which needs only
jax, numpy and optax; exporting a run needs the trainer to restore a checkpoint. It
imports plug-ins only when the run's strategy, arch or task family is not built in,
and says which.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evolopt.registry import ConfigError, first_difference

PROG = "evolopt-export"
KEYS = ["run_dir", "out", "generation", "info", "average"]


def describe(path: str) -> str:
    """A theta file's header as indented lines, and its leaves."""
    from evolopt.export import _flatten, load_theta_file, resolve_path

    theta, header = load_theta_file(resolve_path(path))
    leaves = _flatten(theta)
    size = sum(a.size for a in leaves.values())
    lines = [f"{resolve_path(path)}: arch '{header['arch']}', {len(leaves)} arrays, {size} numbers"]
    lines += json.dumps(header, indent=2, sort_keys=True).splitlines()
    return "\n".join(lines)


def seed_sweep_runs(sweep_dir: str) -> list[str]:
    """The job run dirs of a seed sweep (``evolopt-train -m seed=0,1,2,3 run_dir=SWEEP_DIR``), in job order.

    Refused (ConfigError, one line): a path that is not a sweep dir (no ``multirun.yaml``), a sweep with
    fewer than two jobs, and jobs whose configs differ in anything but ``seed`` (their mean would mix
    recipes; a list ``average=[A,B]`` still averages any runs of one arch and options).
    """
    import yaml

    root = Path(sweep_dir)
    if not (root / "multirun.yaml").is_file():
        raise ConfigError(
            f"average={sweep_dir!r} is neither a list of theta files ('average=[A,B]') nor a sweep dir "
            "(evolopt-train -m seed=0,1,... run_dir=DIR writes DIR/multirun.yaml)"
        )
    jobs = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if len(jobs) < 2:
        raise ConfigError(f"sweep {sweep_dir} has {len(jobs)} job(s); averaging needs two or more")
    configs = []
    for job in jobs:
        try:
            config = yaml.safe_load((job / "config.yaml").read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"sweep job {job}: cannot read its config.yaml ({type(e).__name__})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"sweep job {job}: its config.yaml holds {type(config).__name__}, not a run's config")
        configs.append({k: v for k, v in config.items() if k not in ("seed", "run_dir")})
    for job, config in zip(jobs[1:], configs[1:]):
        diff = first_difference(configs[0], config)
        if diff is not None:
            key, first, other = diff
            raise ConfigError(
                f"sweep {sweep_dir}: jobs {jobs[0].name} and {job.name} differ in {key} ({first!r} vs {other!r}), "
                "not only in seed; average runs of one recipe, or list them: 'average=[A,B]'"
            )
    return [str(job) for job in jobs]


def help_text() -> str:
    import importlib.resources

    with open(importlib.resources.files("evolopt.conf") / "export.yaml") as f:
        text = f.read().split("# --- Hydra")[0]
    keys = ["  " + line for line in text.splitlines() if line and not line.startswith(("#", "defaults", "  -"))]
    return "\n".join(
        [
            "usage: evolopt-export run_dir=DIR [out=FILE.npz] [generation=N] | evolopt-export info=FILE",
            "       evolopt-export 'average=[A,B,...]' out=FILE.npz | evolopt-export average=SWEEP_DIR out=FILE.npz",
            "",
            *keys,
        ]
    )


def _validate(overrides: list[str]) -> None:
    from evolopt.cli import compose_flat

    cfg = compose_flat("export", overrides, KEYS)
    _check(cfg)


def _check(cfg: Any) -> None:
    modes = [key for key in ("run_dir", "info", "average") if cfg[key] is not None]
    if len(modes) != 1:
        raise ConfigError(
            "give one of run_dir=DIR (export a run), info=FILE (print a theta file's header) or "
            f"'average=[A,B,...]' out=FILE (the mean of theta files); got {modes or 'none'}"
        )
    if cfg.average is not None:
        if not isinstance(cfg.average, Sequence):
            raise ConfigError(f"average={cfg.average!r} must be a list of theta files ('average=[A,B]') or a sweep dir")
        if cfg.out is None:
            raise ConfigError("average=[...] needs out=FILE.npz (where to write the mean)")
    if cfg.generation is not None and (isinstance(cfg.generation, bool) or not isinstance(cfg.generation, int)):
        raise ConfigError(f"generation={cfg.generation!r} must be an integer")
    unused = {"info": ["out", "generation"], "average": ["generation"]}.get(modes[0], [])
    given = [key for key in unused if cfg[key] is not None]
    if given:  # usability: an option the mode ignores would be a silent no-op
        raise ConfigError(f"{given[0]}= does nothing with {modes[0]}=; {given[0]}= applies to run_dir= exports")


def export_job(cfg: Any) -> None:
    from evolopt.export import ThetaFileError

    _check(cfg)
    try:
        if cfg.info is not None:
            print(describe(str(cfg.info)))
            return
        if cfg.average is not None:
            from evolopt.export import average_theta_files

            paths = seed_sweep_runs(cfg.average) if isinstance(cfg.average, str) else [str(p) for p in cfg.average]
            path = average_theta_files(paths, str(cfg.out))
            print(f"wrote {path}: the mean of {len(paths)} theta files")
            return
        from evolopt.loop import export_run

        path = export_run(str(cfg.run_dir), None if cfg.out is None else str(cfg.out), cfg.generation)
    except ThetaFileError as e:
        raise ConfigError(str(e)) from None
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """The CLI (a Hydra app like train and evaluate); returns the exit status (2: bad input, one line)."""
    from evolopt.cli import run_hydra

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    return run_hydra(PROG, argv, "export", "run_dir", lambda args: None, _validate, export_job)


if __name__ == "__main__":
    raise SystemExit(main())

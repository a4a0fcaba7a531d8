"""``evolopt-export run_dir=DIR [out=FILE.npz] [generation=N]`` (also ``python -m evolopt.export_cli``):
write a run's mean theta (latest or a given checkpoint) as a portable theta file.

The theta file format and loading live in :mod:`evolopt.export`, which needs only
jax, numpy and optax; this CLI needs the trainer to restore a checkpoint.
"""

from __future__ import annotations

import sys

from evolopt.loop import export_run
from evolopt.registry import ConfigError


def main(argv: list[str] | None = None) -> int:
    """``evolopt-export run_dir=DIR [out=FILE] [generation=N]``."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: evolopt-export run_dir=DIR [out=FILE.npz] [generation=N]"
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a] + sorted(set(args) - {"run_dir", "out", "generation"})
    if bad or "run_dir" not in args:
        print(f"evolopt-export: error: bad arguments {bad or argv}; {usage}", file=sys.stderr)
        return 2
    try:
        generation = int(args["generation"]) if "generation" in args else None
        path = export_run(args["run_dir"], args.get("out"), generation)
    except (ConfigError, ValueError) as e:
        print(f"evolopt-export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

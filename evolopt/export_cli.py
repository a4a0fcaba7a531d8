"""``evolopt-export`` (also ``python -m evolopt.export_cli``):

- ``evolopt-export run_dir=DIR [out=FILE.npz] [generation=N]``: write a run's mean theta (latest or a
  given checkpoint) as a portable theta file;
- ``evolopt-export info=FILE``: print a theta file's header (architecture, where it came from).

The theta file format and loading live in :mod:`evolopt.export`, which needs only
jax, numpy and optax; exporting a run needs the trainer to restore a checkpoint. It
imports plug-ins only when the run's strategy, arch or task family is not built in,
and says which.
"""

from __future__ import annotations

import json
import sys

from evolopt.registry import ConfigError

USAGE = "usage: evolopt-export run_dir=DIR [out=FILE.npz] [generation=N]  |  evolopt-export info=FILE"
KEYS = {"run_dir", "out", "generation", "info"}


def describe(path: str) -> str:
    """A theta file's header as indented lines, and its leaves."""
    from evolopt.export import _flatten, load_theta_file, resolve_path

    theta, header = load_theta_file(resolve_path(path))
    leaves = _flatten(theta)
    size = sum(a.size for a in leaves.values())
    lines = [f"{resolve_path(path)}: arch '{header['arch']}', {len(leaves)} arrays, {size} numbers"]
    lines += json.dumps(header, indent=2, sort_keys=True).splitlines()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit status (2 with one line on stderr for bad input)."""
    from evolopt.export import ThetaFileError

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a] + sorted(set(args) - KEYS)
    if bad or not ({"run_dir", "info"} & set(args)) or {"run_dir", "info"} <= set(args):
        print(f"evolopt-export: error: bad arguments {bad or argv}; {USAGE}", file=sys.stderr)
        return 2
    try:
        if "info" in args:
            print(describe(args["info"]))
            return 0
        from evolopt.loop import export_run

        generation = int(args["generation"]) if "generation" in args else None
        path = export_run(args["run_dir"], args.get("out"), generation)
    except (ConfigError, ThetaFileError, ValueError) as e:
        print(f"evolopt-export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

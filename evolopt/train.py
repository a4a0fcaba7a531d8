"""``python -m evolopt.train [KEY=VALUE ...]``: meta-train a learned optimizer.

    python -m evolopt.train strategy=open_es arch=small_fc_lopt task_family=image_mlp \\
        population_size=32 generations=200 seed=0 run_dir=runs/x

Bad input prints one line naming the bad value and the valid choices, exits 2,
and creates nothing.
"""

from __future__ import annotations

import sys

from evolopt.registry import ConfigError
from evolopt.run_dir import RunAborted  # reliability


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from evolopt.config import help_text, load_config

    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        from evolopt import distributed

        distributed.initialize_from_overrides(argv)  # before any import that touches a device
        cfg = load_config(argv)
        from evolopt.loop import meta_train, summarize

        run_dir = meta_train(cfg)
    except ConfigError as e:
        print(f"evolopt.train: error: {e}", file=sys.stderr)
        return 2
    except RunAborted as e:  # reliability (run_dir.py): signal, full disk, non-finite theta -> one line
        print(f"evolopt.train: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # reliability: Ctrl-C before the run's own handler is installed
        print("evolopt.train: interrupted; the same command resumes from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:  # a broken collective: say so in one line, not only in a traceback
        import jax

        if not (jax.distributed.is_initialized() and isinstance(e, jax.errors.JaxRuntimeError)):
            raise
        print(
            f"evolopt.train: error: process {jax.process_index()} of {jax.process_count()} lost contact with "
            f"the others ({str(e).splitlines()[0][:200]}); restart every process with the same command to "
            "resume from the last checkpoint",
            file=sys.stderr,
        )
        return 3
    if distributed.is_main_process():
        print(summarize(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

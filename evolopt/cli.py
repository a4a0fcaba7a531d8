"""One command-line mechanism for ``evolopt-train`` and ``evolopt-evaluate``: Hydra's own ``main``.

Each CLI is a task function run by :func:`hydra.main`, so Hydra's habits work as
in any Hydra project: ``--cfg job|all``, ``--info``, ``-m/--multirun`` sweeps with
Hydra's launchers (basic, ``hydra/launcher=joblib``, ``hydra/launcher=submitit_slurm``)
and sweepers (basic, ``hydra/sweeper=optuna``). Around it this module adds what
evolopt promises and Hydra alone does not:

- every (expanded) override is validated first; bad input is one line, exit 2, and
  nothing is created (Hydra would make its output directory first); another CLI's habit
  (``--arch celo2``, ``arch celo2``) is told the override it meant (``arch=celo2``);
- Hydra writes nothing of its own (no ``outputs/``, ``multirun/``, ``.hydra/`` or log
  files): a single run's output directory is the current one and only the task writes,
  under its ``run_dir``/``out``; a sweep's directory is that key, one sub-directory per job
  (``<run_dir>/<job number>``) holding that job's whole run;
- ``hydra.run.dir=X`` / ``hydra.sweep.dir=X`` mean ``<key>=X`` (honoured, not ignored).

The settings live in ``evolopt/conf/hydra_settings.yaml``, shared by both CLIs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evolopt.registry import ConfigError

# Hydra flags that take a value (the next token), and --info's optional value.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
_VALUE_FLAGS |= {"--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Every flag hydra.main's command line knows; any other ``-x``/``--name`` is an argparse habit.
_HYDRA_FLAGS = _VALUE_FLAGS | {"--help", "-h", "--hydra-help", "--version", "--resolve", "--run", "-r"}
_HYDRA_FLAGS |= {"--multirun", "-m", "--info", "-i"}


@dataclass
class Argv:
    """A command line split into Hydra's flags and the overrides (``key=value`` items)."""

    flags: list[str]
    overrides: list[str]

    @property
    def multirun(self) -> bool:
        return "-m" in self.flags or "--multirun" in self.flags

    @property
    def runs_task(self) -> bool:
        """False for ``--cfg``, ``--info``, ``--hydra-help``, ``--version``, ``-sc``: Hydra answers alone."""
        return not {"--cfg", "-c", "--info", "-i", "--hydra-help", "--version", "--shell-completion", "-sc"} & set(
            self.flags
        )


def split_argv(argv: list[str]) -> Argv:
    flags, overrides, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUE_FLAGS and i + 1 < len(argv):
            flags += [a, argv[i + 1]]
            i += 2
            continue
        if a in ("--info", "-i"):
            flags.append(a)
            if i + 1 < len(argv) and argv[i + 1] in _INFO_CHOICES:
                flags.append(argv[i + 1])
                i += 1
        elif a.startswith("-") and "=" not in a:
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    return Argv(flags, overrides)


def refuse_argparse_habits(argv: list[str], prog: str) -> None:
    """ConfigError naming the override meant by ``--key value``, ``--key=value`` or ``key value`` (other CLIs'
    habits; Hydra's own errors for them name only a token, or none at all): evolopt takes ``key=value``."""
    for i, a in enumerate(argv):
        if i and argv[i - 1] in _VALUE_FLAGS:  # the value of a Hydra flag (--cfg job, -cn name)
            continue
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        bare_next = nxt is not None and "=" not in nxt and not nxt.startswith("-")
        if a.startswith("-") and a.partition("=")[0] not in _HYDRA_FLAGS:
            key, eq, value = a.lstrip("-").partition("=")
            shown = f"{a} {nxt}" if not eq and bare_next else a
            value = value if eq else (nxt if bare_next else "...")
        elif "=" not in a and a.isidentifier() and bare_next and not (i and argv[i - 1] in ("--info", "-i")):
            key, value, shown = a, nxt, f"{a} {nxt}"
        else:
            continue
        raise ConfigError(f"'{shown}': {prog} takes Hydra overrides, key=value: {key.replace('-', '_')}={value}")


def redirect_hydra_dirs(overrides: list[str], key: str) -> list[str]:
    """``hydra.run.dir=X`` / ``hydra.sweep.dir=X`` become ``<key>=X`` (a conflicting ``<key>`` is refused)."""
    out, wanted = [], {}
    for ov in overrides:
        name, _, value = ov.partition("=")
        if name.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir"):
            wanted[name.lstrip("+")] = value
        else:
            out.append(ov)
    if not wanted:
        return overrides
    values = set(wanted.values())
    given = [ov.partition("=")[2] for ov in out if ov.partition("=")[0] == key]
    if len(values) > 1 or (given and given[-1] not in values):
        raise ConfigError(
            f"{' and '.join(f'{k}={v}' for k, v in wanted.items())} conflicts with "
            f"{key}={given[-1] if given else '?'}; evolopt writes a run under {key}: give one of them"
        )
    if not given:
        out.append(f"{key}={values.pop()}")
    return out


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides of a basic-sweeper multirun (``a=1,2 b=x,y`` -> 4 lists)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def uses_basic_sweeper(overrides: list[str]) -> bool:
    return not any(ov.startswith(("hydra/sweeper=", "+hydra/sweeper=")) for ov in overrides)


def job_dir(run_dir: str) -> str:
    """A job's own run dir: ``run_dir`` for a single run, ``<sweep dir>/<job number>`` in a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return run_dir
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return os.path.join(hc.sweep.dir, hc.sweep.subdir)
    return run_dir


def compose_flat(config_name: str, overrides: list[str], keys: list[str]) -> Any:
    """Compose a flat primary config (``evaluate``, ``export``) from overrides; ConfigError in one line."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="evolopt.conf", version_base="1.3"):
            try:
                return compose(config_name=config_name, overrides=overrides)
            except Exception as e:
                raise ConfigError(f"bad override: {str(e).splitlines()[0]}; valid keys: {', '.join(keys)}") from None
    finally:
        GlobalHydra.instance().clear()


def run_hydra(
    prog: str,
    argv: list[str],
    config_name: str,
    dir_key: str,
    prepare: Callable[[Argv], None],
    validate: Callable[[list[str]], Any],
    task: Callable[[Any], Any],
) -> int:
    """Run ``task`` under ``hydra.main``; returns the exit status.

    Args:
      prog: the command's name, for one-line errors (``evolopt.train``).
      argv: the command line without the program.
      config_name: the primary config in ``evolopt/conf``.
      dir_key: the config key naming where a run writes (``run_dir``, ``out``).
      prepare: called first with the split command line (imports plug-ins, stores groups).
      validate: composes one job's overrides; raises ConfigError on bad input.
      task: the job; a ConfigError inside it is reported in one line (exit 2).
    """
    import hydra

    try:
        refuse_argparse_habits(argv, prog)
        args = split_argv(argv)
        args.overrides = redirect_hydra_dirs(args.overrides, dir_key)
        prepare(args)
        if args.runs_task:
            user = [ov for ov in args.overrides if not ov.lstrip("+~").startswith("hydra")]
            jobs = expand_sweep(user) if args.multirun and uses_basic_sweeper(args.overrides) else [user]
            if args.multirun and not uses_basic_sweeper(args.overrides):
                jobs = [[ov for ov in user if "," not in ov and "(" not in ov]]  # the sweeper's own syntax
            for job in jobs:
                validate(job)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    def guarded(cfg: Any) -> Any:
        try:
            return task(cfg)
        except ConfigError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    main = hydra.main(config_path="pkg://evolopt.conf", config_name=config_name, version_base="1.3")(guarded)
    saved = sys.argv
    sys.argv = [prog, *args.flags, *args.overrides]
    try:
        main()
    finally:
        sys.argv = saved
    return 0

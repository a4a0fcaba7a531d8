"""Hydra composition of the run config, with one-line errors for bad input.

Group options are generated from the registries (a factory's keyword-only
arguments are its options), so built-in and plug-in strategies, architectures
and task families are configured the same way and need no YAML.
"""

from __future__ import annotations

import importlib
import importlib.resources
from importlib.metadata import entry_points
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from evolopt.registry import ARCHITECTURES, STRATEGIES, TASK_FAMILIES, ConfigError, Registry

GROUPS: dict[str, Registry] = {"strategy": STRATEGIES, "arch": ARCHITECTURES, "task_family": TASK_FAMILIES}
ENTRY_POINT_GROUP = "evolopt.plugins"


def import_plugins(modules: list[str]) -> None:
    """Import every module declared in the ``evolopt.plugins`` entry-point group (the
    built-ins are declared there too, in evolopt's pyproject.toml), then those named in
    the config's ``plugins=``."""
    eps = entry_points(group=ENTRY_POINT_GROUP)
    if "task_families" not in {ep.name for ep in eps if ep.value.startswith("evolopt.")}:
        raise ConfigError("evolopt's built-in plug-ins are not registered: install the package (pip install -e .)")
    for ep in eps:
        ep.load()
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"cannot import plugin '{name}': {e}") from None


def load_builtins() -> None:
    """Register evolopt's own strategies, architectures and task families (its entry points), nothing else."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.startswith("evolopt."):
            ep.load()


def import_plugins_for_run(cfg: DictConfig, say: Any = None) -> list[str]:
    """Import plug-ins for a saved run only if its strategy, arch or task family is not a built-in;
    then say which entries needed them. Returns the modules imported (besides the built-ins)."""
    import sys

    say = say or (lambda m: print(m, file=sys.stderr))
    load_builtins()
    missing = [f"{g} '{cfg[g].name}'" for g, registry in GROUPS.items() if cfg[g].name not in registry]
    if not missing:
        return []
    modules = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if not ep.value.startswith("evolopt.")]
    modules += list(cfg.get("plugins") or [])
    say(f"importing plug-ins {', '.join(modules) or '(none)'} to rebuild the run's {', '.join(missing)}")
    import_plugins(list(cfg.get("plugins") or []))
    return modules


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def store_group_options() -> None:
    cs = ConfigStore.instance()
    for group, registry in GROUPS.items():
        for name in registry.names():
            node = {"name": name, **{k: _plain(v) for k, v in registry.defaults(name).items()}}
            cs.store(group=group, name=name, node=node)


def before_plugins(overrides: list[str]) -> tuple[DictConfig, list[Any]] | None:
    """``(config.yaml's defaults, the parsed overrides)``, read without composing the config, for what
    must be known before plug-ins are imported (they may start JAX's backend): the distributed
    runtime, the CPU device count. None when the overrides do not parse: the config loader
    reports that in its own one-line error."""
    with open(importlib.resources.files("evolopt.conf") / "config.yaml") as f:
        defaults = OmegaConf.load(f)
    try:
        return defaults, OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return None


def plugins_from(overrides: list[str]) -> list[str]:
    """The modules named by a ``plugins=[...]`` override (none if absent)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar errors
        raise ConfigError(f"cannot parse overrides {overrides}: {str(e).splitlines()[0]}") from None
    for ov in parsed:
        if ov.key_or_group == "plugins":
            value = ov.value()
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []


PLUGIN_HINT = "; a plug-in's entries need plugins=[its.module] (or its package's evolopt.plugins entry point)"


def _plugins_from_safe(overrides: list[str]) -> list[str]:
    try:
        return plugins_from(overrides)
    except ConfigError:
        return []


def _valid_keys(node: Any) -> list[str]:
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def load_config(overrides: list[str]) -> DictConfig:
    """Compose the run config from command-line overrides; ConfigError on bad input."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar errors
        raise ConfigError(f"cannot parse overrides {overrides}: {str(e).splitlines()[0]}") from None
    import_plugins(plugins_from(overrides))
    store_group_options()

    groups = []
    for ov in parsed:
        key = ov.key_or_group.lstrip("+~")
        if key in GROUPS:
            try:
                GROUPS[key].get(str(ov.value()))  # raises: unknown <group> '<value>'; valid choices: ...
            except ConfigError as e:
                hint = "" if _plugins_from_safe(overrides) else PLUGIN_HINT
                raise ConfigError(f"{e}{hint}") from None
            groups.append(ov.input_line)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="evolopt.conf", version_base=None):
        base = compose(config_name="config", overrides=groups)
        for ov in parsed:
            key = ov.key_or_group
            if key in GROUPS or key.startswith(("hydra", "+")):
                continue
            *parents, leaf = key.lstrip("~").split(".")
            node = base
            for i, p in enumerate(parents):
                if not isinstance(node, DictConfig) or p not in node:
                    where = ".".join(parents[:i]) or "the config"
                    raise ConfigError(
                        f"unknown key '{key}': no '{p}' in {where}; valid: {', '.join(_valid_keys(node))}"
                    )
                node = node[p]
            if not isinstance(node, DictConfig) or leaf not in node:
                where = ".".join(parents) or "the top level"
                raise ConfigError(f"unknown key '{key}'; valid keys at {where}: {', '.join(_valid_keys(node))}")
        try:
            cfg = compose(config_name="config", overrides=overrides)
        except Exception as e:
            raise ConfigError(f"bad override: {str(e).splitlines()[0]}") from None
    GlobalHydra.instance().clear()
    return cfg


def group_config(cfg: DictConfig, group: str) -> tuple[str, dict]:
    """``(name, options)`` of a group in a composed config."""
    node = OmegaConf.to_container(cfg[group], resolve=True)
    return node.pop("name"), node


def help_text(plugins: list[str] | None = None) -> str:
    """``evolopt-train --help``: groups and options from the registries (with ``plugins=``'s entries),
    the other keys with their comments, and Hydra's flags."""
    import_plugins(plugins or [])
    lines = [
        "usage: evolopt-train [-m] [--cfg job|all] [KEY=VALUE ...]   (also: python -m evolopt.train)",
        "",
        "Meta-train a learned optimizer with an evolution strategy (Hydra overrides).",
        "Example: evolopt-train strategy=open_es arch=small_fc_lopt population_size=32 run_dir=runs/x",
        "",
        "Config groups (pick with GROUP=NAME, set options with GROUP.OPTION=VALUE):",
    ]
    for group, registry in GROUPS.items():
        lines.append(f"  {group}:")
        for name in registry.names():
            opts = ", ".join(f"{k}={_plain(v)}" for k, v in registry.defaults(name).items())
            lines.append(f"    {name:<16} {opts}")
    with open(importlib.resources.files("evolopt.conf") / "config.yaml") as f:
        lines += ["", "Other keys (evolopt/conf/config.yaml):", ""]
        text = f.read().split("# --- Hydra")[0]
        lines += ["  " + line for line in text.splitlines() if line and not line.startswith(("#", "defaults", "  -"))]
    lines += [
        "",
        "Plug-ins: plugins=[my_pkg.my_tasks] imports modules that register their own entries",
        "  (then listed above: evolopt-train --help plugins=[my_pkg.my_tasks]).",
        "",
        "Hydra (a Hydra app; Hydra writes no outputs/ or .hydra/ folders, only the run writes, under run_dir):",
        "  --cfg job|all             print the composed config and exit",
        "  -m KEY=A,B ...            a sweep: job N runs in <run_dir>/N (the same command resumes every job)",
        "  hydra/launcher=joblib     run a sweep's jobs as local processes (hydra-joblib-launcher)",
        "  hydra/launcher=submitit_slurm   one SLURM job per run (hydra-submitit-launcher; see README)",
        "  -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 'strategy.sigma=interval(0.003,0.1)'   a search",
        "    minimising the final meta-loss of the mean theta (hydra-optuna-sweeper)",
        "  hydra.run.dir=X           the same as run_dir=X",
    ]
    return "\n".join(lines)

"""Name -> factory registries for strategies, architectures and task families.

A registry is a plain dict filled by a decorator at import time. A factory's
keyword-only arguments (with their defaults) are its configuration: the CLI
turns them into the Hydra config group option of the same name, so a plug-in
needs no YAML.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

# Keyword-only factory arguments that are not user options: the trainer passes them
# (e.g. a per-particle strategy's accumulators are shaped by tasks_per_member).
CONTEXT_ARGS = frozenset({"tasks_per_member"})


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the value and the valid choices."""


def first_difference(here: dict, there: dict) -> tuple[str, Any, Any] | None:
    """The first key whose values differ, dotted inside nested dicts (``task.steps``), with both values."""
    for key in dict.fromkeys([*here, *there]):
        a, b = here.get(key), there.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = first_difference(a, b)
            if inner is not None:
                return f"{key}.{inner[0]}", inner[1], inner[2]
        elif a != b:
            return key, a, b
    return None


class Registry:
    """A named collection of factories, e.g. ``TASK_FAMILIES``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@TASK_FAMILIES.register("my_family")`` on a factory."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            previous = self._factories.get(name)
            if previous is not None and previous is not factory:
                same_origin = (previous.__module__, previous.__qualname__) == (
                    factory.__module__,
                    factory.__qualname__,
                )
                if not same_origin:  # re-importing a module is fine; a clash is not
                    raise ConfigError(
                        f"{self.kind} '{name}' is already registered by {previous.__module__}.{previous.__qualname__}"
                    )
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} '{name}'; valid choices: {', '.join(self.names())}") from None

    def defaults(self, name: str) -> dict[str, Any]:
        """The factory's keyword-only arguments and their defaults: its config."""
        return factory_defaults(self.get(name))

    def build(self, name: str, *args: Any, context: dict | None = None, **config: Any) -> Any:
        """Call the factory, rejecting keys it does not take with the valid ones.

        ``context`` entries (see CONTEXT_ARGS) are passed to factories that take them."""
        valid = self.defaults(name)
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown option '{unknown[0]}' for {self.kind} '{name}'; "
                f"valid options: {', '.join(sorted(valid)) or '(none)'}"
            )
        for key, value in config.items():
            check_type(f"{self.kind}.{key}", value, valid[key])
        accepted = inspect.signature(self.get(name)).parameters
        extra = {k: v for k, v in (context or {}).items() if k in CONTEXT_ARGS and k in accepted}
        return self.get(name)(*args, **config, **extra)


def check_type(key: str, value: Any, default: Any) -> None:
    """Reject a value whose type does not match the option's default (int is fine for float)."""
    if default is None or value is None:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, tuple), tuple: (list, tuple)}
    want = kinds.get(type(default))
    if want is None:
        return
    ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    if not ok:
        raise ConfigError(f"{key}={value!r} must be of type {type(default).__name__} (default {default!r})")


def factory_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    out = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in CONTEXT_ARGS:
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"{factory.__qualname__}: option '{p.name}' needs a default")
            out[p.name] = p.default
    return out


STRATEGIES = Registry("strategy")
ARCHITECTURES = Registry("arch")
TASK_FAMILIES = Registry("task_family")

register_strategy = STRATEGIES.register
register_arch = ARCHITECTURES.register
register_task_family = TASK_FAMILIES.register

"""How many CPU devices a meta-training run splits its population over (``cpu_devices``).

JAX gives a process one CPU device unless told otherwise, and one device kept 1.35-1.8 of 2
cores busy in a generation step: the vmapped small matmuls (Newton-Schulz) and per-element
loops of one device run largely on one thread. With ``d`` devices the population is sharded
``d`` ways (``evolopt.meta.population_mesh``) and each shard runs on its own thread. Measured on
a 2-core AMD EPYC (32 members x 4 tasks x 50 steps, ``benchmarks/member_steps.py``), 2 devices /
1 device member-steps/s: Adam members 1.19-2.00x, learned ones 1.21-1.68x (README, "Benchmarks
and performance"). Machines with more cores are unmeasured: there ``auto`` may give each device
as little as one antithetic pair, and ``cpu_devices=N`` caps it.

``cpu_devices``:

* ``auto`` (default): the most devices, at most the cores this process may use, over which
  every ``population_size`` of the command splits into antithetic pairs evenly
  (``population_size % (2 d) == 0``); one device per process in a multi-process run;
* a whole number ``d >= 1``: that many (per process);
* ``null``: JAX's own choice (one, or what ``XLA_FLAGS=--xla_force_host_platform_device_count``
  says).

A count in ``XLA_FLAGS`` always wins over ``auto`` (tests and users force counts that way).
The count must be set before JAX starts its CPU backend, so :mod:`evolopt.train` sets it from
the command line before importing plug-ins. Members are computed alike on any number of
devices; only reductions across shards may add in another order (results move by rounding,
``tests/test_sharding.py``), so a run may resume with another count. On a GPU the population
is sharded over the GPUs and this setting changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax

from evolopt.registry import ConfigError

FORCE_FLAG = "xla_force_host_platform_device_count"


def check(value: Any) -> None:
    """Raise ConfigError in one line unless ``value`` is ``auto``, ``None`` or a whole number >= 1."""
    if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise ConfigError(f"cpu_devices={value!r}; valid choices: auto, a whole number >= 1, null (JAX's own: one)")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, SLURM's cpus-per-task)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve(value: Any, populations: Iterable[int], cores: int) -> int | None:
    """The device count ``value`` asks for: ``None`` leaves JAX's own; ``auto`` is the largest
    ``d <= cores`` with every population a multiple of ``2 d``."""
    check(value)
    if value != "auto":
        return value
    populations = list(populations)
    return max((d for d in range(2, cores + 1) if all(n % (2 * d) == 0 for n in populations)), default=1)


def configure(value: Any, populations: Iterable[int]) -> int | None:
    """Give JAX's CPU backend the count ``value`` resolves to, before it starts.

    Returns the count set, or ``None`` where it is left as it is: ``value`` null, a count in
    ``XLA_FLAGS``, ``auto`` in a multi-process run or once the backend has started (in-process
    use: its devices stand and ``population_mesh`` checks the split). A whole number the started
    backend does not have is a ConfigError.
    """
    from jax._src import xla_bridge

    check(value)
    forced = FORCE_FLAG in os.environ.get("XLA_FLAGS", "")
    if value is None or (value == "auto" and (forced or jax.distributed.is_initialized())):
        return None
    if xla_bridge.backends_are_initialized():
        if value != "auto" and value != jax.local_device_count("cpu"):
            raise ConfigError(
                f"cpu_devices={value}: this process's CPU backend started with {jax.local_device_count('cpu')} "
                "device(s); set it before any JAX computation (python -m evolopt.train does)"
            )
        return None
    count = resolve(value, populations, usable_cores())
    jax.config.update("jax_num_cpu_devices", count)
    return count


def configure_from_overrides(overrides: list[str]) -> int | None:
    """:func:`configure` from the command line's ``cpu_devices`` and ``population_size`` (every value
    of a sweep) over the defaults; what the command cannot parse is left to the config loader."""
    from evolopt.config import before_plugins

    read = before_plugins(overrides)
    if read is None:
        return None
    defaults, parsed = read
    values: dict[str, list[Any]] = {key: [defaults[key]] for key in ("cpu_devices", "population_size")}
    try:
        for ov in parsed:
            if ov.key_or_group in values:
                values[ov.key_or_group] = list(ov.sweep_iterator()) if ov.is_sweep_override() else [ov.value()]
        populations = [int(n) for n in values["population_size"]]
    except Exception:
        return None  # a population_size that is no whole number: the config loader says so in one line
    if len(values["cpu_devices"]) != 1:
        raise ConfigError("cpu_devices cannot be swept: one process has one device count")
    return configure(values["cpu_devices"][0], populations)

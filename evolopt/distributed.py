"""One meta-training across several processes and hosts, on JAX's own distributed runtime.

Every process runs the same program on the same seed: the strategy state is
replicated (identical everywhere), the population is sharded over the *global*
device mesh (:func:`evolopt.meta.population_mesh` uses ``jax.devices()``, which
lists every process's devices once ``jax.distributed`` is up), and XLA's
collectives gather fitness inside the jitted generation step. Only process 0
writes logs, TensorBoard, theta files and plots; every process takes part in
saving and restoring orbax checkpoints (each writes its own shards).

How the processes find each other (``distributed:`` config section):

* ``coordinator=HOST:PORT num_processes=N process_id=i``: explicit;
* ``coordinator=null`` (default): if the environment describes a multi-process
  job that :func:`jax.distributed.initialize` can detect (SLURM with more than one
  task, Open MPI / mpirun, Cloud TPU pods), it is called without arguments;
  otherwise the run is a single process and nothing is initialised;
* ``enabled=false``: never initialise (e.g. one process per node by choice).

If a process dies, the coordination service notices its missing heartbeats and
terminates the others within ``heartbeat_timeout_s`` with a message naming the
dead task ("another task died"), so a job never hangs; a collective that breaks
first raises, and :mod:`evolopt.train` turns that into one line. Restarting every
process with the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from evolopt.registry import ConfigError

_MULTI_PROCESS_ENV = {  # variable -> what says "more than one process" for detection
    "SLURM_NTASKS": "SLURM",
    "OMPI_COMM_WORLD_SIZE": "Open MPI",
}


def detected_cluster() -> str | None:
    """Name of the multi-process launcher in this environment (None: a lone process)."""
    for var, name in _MULTI_PROCESS_ENV.items():
        try:
            if int(os.environ.get(var, "1")) > 1:
                return name
        except ValueError:
            continue
    if os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") >= 1:
        return "Cloud TPU pod"
    return None


def initialize(cfg: Any) -> bool:
    """Start ``jax.distributed`` as the ``distributed:`` config section says; True if multi-process.

    Must run before anything touches a JAX device (the backend is fixed then).
    """
    if cfg is None or not cfg.get("enabled", True):
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    coordinator, n, pid = cfg.get("coordinator"), cfg.get("num_processes"), cfg.get("process_id")
    explicit = coordinator is not None
    if explicit:
        if not isinstance(n, int) or n < 1 or not isinstance(pid, int) or not 0 <= pid < n:
            raise ConfigError(
                f"distributed.coordinator={coordinator} needs distributed.num_processes >= 1 and "
                f"0 <= distributed.process_id < num_processes, got num_processes={n}, process_id={pid}"
            )
        if ":" not in str(coordinator):
            raise ConfigError(f"distributed.coordinator={coordinator} must be HOST:PORT")
    elif detected_cluster() is None:
        return False
    collectives = cfg.get("cpu_collectives", "gloo")
    if collectives not in ("gloo", "mpi"):
        raise ConfigError(f"bad distributed.cpu_collectives '{collectives}'; valid choices: gloo, mpi")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ConfigError(
            "a distributed run must start jax.distributed before any JAX computation; "
            "launch it with `python -m evolopt.train distributed.coordinator=...`"
        )
    jax.config.update("jax_cpu_collectives_implementation", collectives)  # CPU-only clusters and tests
    timeout = int(cfg.get("heartbeat_timeout_s", 60))
    kwargs = dict(initialization_timeout=int(cfg.get("init_timeout_s", 300)), heartbeat_timeout_seconds=timeout)
    if explicit:
        jax.distributed.initialize(str(coordinator), n, pid, **kwargs)
    else:
        jax.distributed.initialize(**kwargs)
    return jax.process_count() > 1


def initialize_from_overrides(overrides: list[str]) -> bool:
    """:func:`initialize` from the command line's ``distributed.*`` overrides and the defaults.

    The train CLI calls this before composing the config, because importing the
    strategies (evosax) already creates JAX arrays and so fixes the backend.
    """
    from omegaconf import OmegaConf

    from evolopt.config import before_plugins

    read = before_plugins(overrides)
    if read is None:
        return False
    defaults, parsed = read
    cfg = OmegaConf.create(OmegaConf.to_container(defaults.distributed))
    for ov in parsed:
        group, _, key = ov.key_or_group.partition(".")
        if group == "distributed" and key in cfg:
            cfg[key] = ov.value()
    return initialize(cfg)


def is_main_process() -> bool:
    """Process 0 writes logs, TensorBoard, theta files and plots."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached this point (no-op for a lone process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's value of ``flag`` on every process (decisions from wall clocks must agree)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free now: for a coordinator of processes on one machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe() -> str:
    return (
        f"process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices"
    )


def agree_max(value: int) -> int:
    """The largest ``value`` of all processes, on every process (a signal that reached any
    one process stops them all at the same generation)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))

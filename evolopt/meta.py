"""The generation step: ask -> train every member on its tasks -> tell, in one jit.

    population  = strategy.ask(key)                       # [N] thetas, sharded over devices
    inner, loss = vmap_N vmap_K unroll(theta_i, inner_ik)  # K tasks per member, lax.scan inside
    strategy    = strategy.tell(population, loss)

Inner states persist across generations (truncated / persistent unrolls); with
``truncation_length == min_length == max_length`` and no stagger every generation
trains fresh tasks for the full horizon. Member ``i`` and ``i + N/2`` are
antithetic partners (evosax's layout) and share their tasks' keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from evolopt import xla_cpu
from evolopt.architectures.base import LearnedOptimizer
from evolopt.contracts import Strategy, TaskFamily
from evolopt.registry import ConfigError
from evolopt.unroll import EvalCurves, InnerState, TruncationLoss, UnrollConfig, eval_curves, init_inner_state, unroll

POP_AXIS = "pop"
MEMORY_FRACTION = 0.6  # member_chunks=auto: share of free device memory the step may plan to use


@struct.dataclass
class MetaState:
    strategy: Any
    inner: InnerState  # leaves [N, K, ...]
    key: jax.Array
    generation: jax.Array


def population_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all devices (every process's, under jax.distributed)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(devices, (POP_AXIS,))


def strong_types(tree: Any) -> Any:
    """Drop weak types (evosax inits counters from Python scalars), so that the state
    a step returns has the type it was given and the jitted step compiles once."""

    def strong(x):
        x = jnp.asarray(x)
        return jax.lax.convert_element_type(x, x.dtype) if getattr(x, "weak_type", False) else x

    return jax.tree.map(strong, tree)


@dataclasses.dataclass(frozen=True)
class MetaTrainer:
    strategy: Strategy
    family: TaskFamily
    lopt: LearnedOptimizer
    unroll_cfg: UnrollConfig
    tasks_per_member: int
    mesh: Mesh
    member_chunks: int = 1  # > 1: train each device's members in this many sequential chunks (less memory)
    cpu_reassociate: bool = True  # compile with xla_cpu.REASSOCIATE on CPU (vectorised reductions, +17-33%)
    cpu_vector_width: int | None = None  # on CPU, the SIMD width XLA prefers (bits; None: XLA's own, 256)

    def __post_init__(self):
        n, d = self.strategy.population_size, self.mesh.size
        if n % (2 * d):
            raise ValueError(
                f"population_size {n} must be divisible by 2 x devices = {2 * d} (antithetic pairs, equal shards)"
            )
        if self.member_chunks < 1 or (n // d) % self.member_chunks:
            raise ValueError(
                f"member_chunks={self.member_chunks} must be >= 1 and divide the {n // d} members per device"
            )

    @property
    def member_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(POP_AXIS))

    def _shard(self, tree: Any) -> Any:
        return jax.lax.with_sharding_constraint(tree, self.member_sharding)

    def _make_state(self, theta0: Any) -> Callable[[jax.Array], MetaState]:
        n, k = self.strategy.population_size, self.tasks_per_member
        init_one = lambda key: init_inner_state(key, theta0, self.family, self.lopt, self.unroll_cfg)  # noqa: E731

        def make(key):
            k_strategy, k_inner, k_loop = jax.random.split(key, 3)
            pair_keys = jax.random.split(k_inner, (n // 2, k))
            inner = jax.vmap(jax.vmap(init_one))(jnp.concatenate([pair_keys, pair_keys]))
            state = MetaState(self.strategy.init(k_strategy, theta0), inner, k_loop, jnp.zeros((), jnp.int32))
            return strong_types(state)

        return make

    @staticmethod
    def _raw_key(key: jax.Array) -> np.ndarray:
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)  # raw uint32 keys: plain arrays for checkpoints
        return np.asarray(jax.device_get(key))

    def init(self, key: jax.Array, theta0: Any) -> MetaState:
        """Strategy state, and K trajectories per antithetic pair (shared by both partners)."""
        make, key = self._make_state(theta0), self._raw_key(key)
        # Built inside one jit straight into its shardings: under jax.distributed every
        # process computes the same replicated values, and no host array is copied around.
        shardings = self.state_sharding(jax.eval_shape(make, key))
        return jax.jit(make, out_shardings=shardings)(key)

    def abstract_init(self, key: jax.Array, theta0: Any) -> MetaState:
        """Shapes, dtypes and shardings of :meth:`init`'s state, allocating nothing
        (to plan memory before a large population is created)."""
        shapes = jax.eval_shape(self._make_state(theta0), self._raw_key(key))
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_sharding(shapes)
        )

    def state_sharding(self, state: MetaState) -> MetaState:
        """Inner states split over the population axis; everything else replicated."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        return MetaState(
            jax.tree.map(lambda _: replicated, state.strategy),
            jax.tree.map(lambda _: self.member_sharding, state.inner),
            replicated,
            replicated,
        )

    def train_members(self, population: Any, inner: InnerState) -> tuple[InnerState, TruncationLoss]:
        """Every member's truncation on each of its K tasks: vmap over members, then tasks."""
        one = lambda theta, st: unroll(theta, st, self.family, self.lopt, self.unroll_cfg)  # noqa: E731
        members = jax.vmap(jax.vmap(one, in_axes=(None, 0)))
        population, inner = self._shard(population), self._shard(inner)
        c, d = self.member_chunks, self.mesh.size
        if c == 1:
            return members(population, inner)

        # [N, ...] -> [c, d, N/(c d), ...]: chunk j holds the j-th slice of every device's block,
        # so each sequential chunk still runs on all devices.
        def split(x):
            return jnp.swapaxes(x.reshape((d, c, -1) + x.shape[1:]), 0, 1)

        def merge(x):
            return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[3:])

        chunked = NamedSharding(self.mesh, PartitionSpec(None, POP_AXIS))
        xs = jax.lax.with_sharding_constraint(jax.tree.map(split, (population, inner)), chunked)
        out = jax.lax.map(lambda pi: jax.vmap(members)(*pi), xs)
        return jax.tree.map(merge, out)

    def step(self, state: MetaState) -> tuple[MetaState, dict]:
        """One generation (pure; jit it)."""
        key, k_ask, k_tell = jax.random.split(state.key, 3)
        old_mean = ravel_pytree(self.strategy.mean(state.strategy))[0]
        population, sstate = self.strategy.ask(k_ask, state.strategy)
        inner, losses = self.train_members(population, state.inner)
        sstate, _ = self.strategy.tell(k_tell, population, losses, sstate)
        new_mean = ravel_pytree(self.strategy.mean(sstate))[0]
        fitness = self.strategy.fitness(losses)
        metrics = {
            "fitness/mean": jnp.mean(fitness),
            "fitness/min": jnp.min(fitness),
            "fitness/max": jnp.max(fitness),
            "fitness/nonfinite_steps": jnp.sum(losses.nonfinite),
            "fitness/resets": jnp.sum(losses.reset),
            "theta/norm": jnp.linalg.norm(new_mean),
            "theta/update_norm": jnp.linalg.norm(new_mean - old_mean),
        }
        return MetaState(strong_types(sstate), self._shard(inner), key, state.generation + 1), metrics

    @property
    def member_steps_per_generation(self) -> int:
        return self.strategy.population_size * self.tasks_per_member * self.unroll_cfg.truncation_length


def make_curve_evaluator(
    family: TaskFamily,
    lopt: LearnedOptimizer,
    num_tasks: int,
    num_steps: int,
    loss_clip: float = 1.5,
    meta_loss: str = "train",
    meta_weight: str = "uniform",
    valid_share: float = 0.5,
    cpu_reassociate: bool = True,
    cpu_vector_width: int | None = None,
) -> Callable[[Any, jax.Array], EvalCurves]:
    """``(theta, key) -> EvalCurves`` (leaves ``[E, steps]``, ``final_valid [E]``) on E fresh tasks, jitted.

    The meta-loss of ``theta`` on these tasks is ``mean(curves.weighted())``: the mean over steps
    and tasks of the normalised training-minibatch loss, or with ``meta_loss="valid"`` of the
    validation loss at each step's params (``"both"``: the two mixed by ``valid_share``), each step weighted
    as ``meta_weight`` says (the objective a member's fitness estimates). Compiled with
    ``xla_cpu.REASSOCIATE`` on CPU unless ``cpu_reassociate=False``, preferring ``cpu_vector_width``-bit
    vectors when given.
    """

    def evaluate(theta, key):
        keys = jax.random.split(key, num_tasks)
        one = lambda k: eval_curves(  # noqa: E731
            theta, k, family, lopt, num_steps, loss_clip, meta_loss, meta_weight, valid_share
        )
        return jax.vmap(one)(keys)

    return xla_cpu.jit(evaluate, cpu_reassociate, cpu_vector_width)


def free_device_memory(device: jax.Device | None = None) -> int:
    """Bytes a step may use on ``device``: an accelerator's limit minus what is in use; for
    CPU devices (which report no limit) an equal share of the host's available RAM."""
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    import psutil

    return int(psutil.virtual_memory().available // max(1, jax.local_device_count()))


def choose_member_chunks(fixed_bytes: int, temp_bytes: int, members_per_device: int, budget_bytes: float) -> int:
    """The fewest sequential chunks ``C`` (a divisor of the members per device) that fit.

    ``fixed_bytes`` (arguments + outputs) and ``temp_bytes`` (XLA's temporaries) come
    from the memory analysis of the all-at-once step; the temporaries are the members'
    inner training and scale as ``1/C``, so we want the smallest divisor with
    ``fixed + temp / C <= budget``. If none fits, one member at a time (``C = members``).
    """
    for c in range(1, members_per_device + 1):
        if members_per_device % c == 0 and fixed_bytes + temp_bytes / c <= budget_bytes:
            return c
    return members_per_device


def jit_step(trainer: MetaTrainer, state: Any):
    """The generation step, jitted: state donated, metrics replicated (readable on every process)."""
    replicated = NamedSharding(trainer.mesh, PartitionSpec())
    shardings = (trainer.state_sharding(state), replicated)
    options = (trainer.cpu_reassociate, trainer.cpu_vector_width)
    return xla_cpu.jit(trainer.step, *options, donate_argnums=0, out_shardings=shardings)


def plan_memory(trainer: MetaTrainer, abstract: Any, member_chunks: Any) -> tuple[MetaTrainer, Any]:
    """Compile the step for the state's shapes (nothing allocated yet) and check that it fits.

    XLA's memory analysis gives the bytes of arguments + outputs (fixed) and of
    temporaries (the members' inner training, which scale as 1 / member_chunks).
    ``member_chunks=auto`` picks the fewest chunks that fit; a run that would not fit
    even one member per chunk is refused here, before its run dir exists."""
    step = jit_step(trainer, abstract).lower(abstract).compile()
    use = step.memory_analysis()
    if use is None:  # the backend does not say: trust the config
        return trainer, step
    members = trainer.strategy.population_size // trainer.mesh.size
    fixed = use.argument_size_in_bytes + use.output_size_in_bytes
    temp_all = use.temp_size_in_bytes * trainer.member_chunks  # as if all members at once
    free = free_device_memory()
    if fixed + temp_all / members > free:
        raise ConfigError(
            f"population_size={trainer.strategy.population_size} does not fit: even one member at a time "
            f"(member_chunks={members}) needs about {_gib(fixed + temp_all / members)} per device, "
            f"{_gib(free)} free; use a smaller population_size, tasks_per_member or unroll.truncation_length"
        )
    if member_chunks != "auto":
        if fixed + temp_all / trainer.member_chunks > free:
            raise ConfigError(
                f"member_chunks={trainer.member_chunks} needs about {_gib(fixed + temp_all / trainer.member_chunks)} "
                f"per device, {_gib(free)} free; use member_chunks=auto or a larger divisor of {members}"
            )
        return trainer, step
    chunks = choose_member_chunks(fixed, temp_all, members, MEMORY_FRACTION * free)
    if chunks == 1:
        return trainer, step
    trainer = dataclasses.replace(trainer, member_chunks=chunks)
    return trainer, jit_step(trainer, abstract).lower(abstract).compile()


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"

"""Inner training: one member trains one sampled task for a truncation of K steps.

An :class:`InnerState` is one trajectory in progress: the model's params, the
optimizer's state, the task, the step counter, the trajectory's planned length
``T`` and the task state (e.g. an RL agent's environments; ``()`` for stateless
families, see :mod:`evolopt.contracts`). When ``step == T`` the trajectory ends
and a new one starts (new task, new init, new ``T``, fresh task state) *inside*
the truncation; the losses of the K steps
are then split into the part before and the part after that reset, which the
persistent estimators need (PES credits the part before to every perturbation
since the old trajectory began, the part after only to the current one).

All randomness of a trajectory comes from its ``key``, which antithetic partners
share: they see the same task, init, length and batches (common random numbers).

Inside the scan, an arch with ``flat_short_rows`` has its params carried in a flat layout
(:func:`to_carry`, a speed matter only); everything outside sees them in their shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from evolopt.architectures.base import LearnedOptimizer, Theta, short_rows
from evolopt.contracts import TaskFamily, TruncationLoss, log_uniform_int, normalized_loss

META_LOSSES = ("train", "valid", "both")  # both: the mean of the two normalised losses
META_WEIGHTS = ("uniform", "linear")


@dataclasses.dataclass(frozen=True)
class UnrollConfig:
    """Trajectory lengths are log-uniform in ``[min_length, max_length]``."""

    truncation_length: int = 50
    min_length: int = 50
    max_length: int = 50
    stagger: bool = False  # start trajectories at random steps so a generation sees all phases
    loss_clip: float = 1.5  # normalised losses above this (and NaN/inf) score this
    meta_loss: str = "train"  # a step's meta-loss: "train" (its minibatch), "valid" (a validation batch), "both"
    meta_weight: str = "uniform"  # how steps of a trajectory are weighted: see step_weight
    valid_share: float = 0.5  # under meta_loss="both": the validation loss's share, see step_meta_loss

    def __post_init__(self):
        if self.meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss={self.meta_loss!r}; valid choices: {', '.join(META_LOSSES)}")
        check_valid_share(self.valid_share)
        if self.meta_weight not in META_WEIGHTS:
            raise ValueError(f"meta_weight={self.meta_weight!r}; valid choices: {', '.join(META_WEIGHTS)}")
        if not 1 <= self.truncation_length <= self.min_length <= self.max_length:
            raise ValueError(
                "need 1 <= truncation_length <= min_length <= max_length, got "
                f"{self.truncation_length}, {self.min_length}, {self.max_length}"
            )


def check_valid_share(share: Any, option: str = "valid_share") -> None:
    """ValueError unless ``share`` is a number in [0, 1]; the message names it as ``option``."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"{option}={share!r} must be a number in [0, 1] (the validation loss's share)")


@struct.dataclass
class InnerState:
    params: Any
    opt_state: Any
    task: Any
    step: jax.Array  # int32: steps taken in this trajectory
    length: jax.Array  # int32: this trajectory's planned length T
    key: jax.Array  # trajectory key, shared by antithetic partners
    task_state: Any = ()  # the family's mutable per-trajectory state (evolopt.contracts)


def step_weight(step: jax.Array, length: jax.Array, scheme: str) -> jax.Array:
    """The weight of step ``t`` (0-based) of a trajectory of planned length ``T`` in the meta-loss.

    ``uniform``: ``w(t) = 1`` (the mean loss over the run, as published).
    ``linear``: ``w(t) = 2 (t + 1) / (T + 1)``, whose mean over ``t = 0 .. T-1`` is 1, so the two
    schemes are on one scale; the last half of the run carries 3/4 of the weight. It scores where a
    run ends rather than how fast it gets low, which a rule that gets low early and then overfits
    would otherwise win. The weight depends only on the step's position, so a trajectory's
    meta-loss is still a sum over its truncations and PES stays unbiased for it.
    """
    if scheme == "uniform":
        return jnp.ones_like(step, jnp.float32)
    return 2.0 * (step + 1).astype(jnp.float32) / (length + 1).astype(jnp.float32)


def sample_length(key: jax.Array, cfg: UnrollConfig) -> jax.Array:
    return log_uniform_int(key, cfg.min_length, cfg.max_length)


def new_trajectory(
    key: jax.Array, theta: Theta, family: TaskFamily, lopt: LearnedOptimizer, cfg: UnrollConfig
) -> InnerState:
    k_task, k_init, k_len, k_next = jax.random.split(key, 4)
    task = family.sample_task(k_task)
    params = family.init_params(k_init, task)
    opt_state = lopt.optimizer(theta).init(params)
    # its own stream (fold_in, not a 5th split): the other keys stay what they were
    task_state = family.initial_task_state(jax.random.fold_in(k_init, 0x57A7E), task)
    return InnerState(params, opt_state, task, jnp.zeros((), jnp.int32), sample_length(k_len, cfg), k_next, task_state)


def init_inner_state(
    key: jax.Array, theta: Theta, family: TaskFamily, lopt: LearnedOptimizer, cfg: UnrollConfig
) -> InnerState:
    """A first trajectory; staggered ones start at a step drawn uniformly in [0, T)."""
    state = new_trajectory(key, theta, family, lopt, cfg)
    if cfg.stagger:
        offset = jax.random.randint(jax.random.fold_in(key, 7), (), 0, state.length)
    else:  # start "finished", so the first step begins a fresh trajectory
        offset = state.length
    return state.replace(step=offset)


def _where(pred: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def carry_shapes(lopt: LearnedOptimizer, params: Any) -> Any:
    """The params' shapes where the inner loop carries ``lopt``'s params in the flat layout
    (``lopt.flat_short_rows``: :func:`to_carry`), else None (carried as they are)."""
    return jax.tree.map(jnp.shape, params) if lopt.flat_short_rows else None


def to_carry(tree: Any, shapes: Any) -> Any:
    """``tree`` (params or updates) in the carry layout: each tensor whose rows are shorter than
    ``SHORT_ROW`` (``architectures.base``) flattened (a free reshape); unchanged where ``shapes`` is None.

    Why: XLA fuses a per-element rule into the loop that applies its update, and that loop runs
    over the applied array's shape. On a ``[32, 10]`` classifier head its inner loop has 10
    iterations, which LLVM does not vectorise; applied to the flat ``[320]`` view it does
    (small_fc_lopt's head: 58 -> 10 ms per generation, README "Benchmarks and performance").
    """
    if shapes is None:
        return tree
    return jax.tree.map(lambda x, s: x.reshape(-1) if short_rows(s) else x, tree, shapes)


def from_carry(tree: Any, shapes: Any) -> Any:
    """The inverse of :func:`to_carry`: every tensor back in its shape."""
    return tree if shapes is None else jax.tree.map(lambda x, s: x.reshape(s), tree, shapes)


def _in_carry(st: InnerState, shapes: Any) -> InnerState:
    return st.replace(params=to_carry(st.params, shapes))


def _in_shape(st: InnerState, shapes: Any) -> InnerState:
    return st.replace(params=from_carry(st.params, shapes))


def train_step(
    opt: optax.GradientTransformationExtraArgs, family: TaskFamily, st: InnerState, shapes: Any = None
) -> tuple[InnerState, jax.Array]:
    """One optimizer step on a minibatch keyed by (trajectory key, step); returns the loss before it.

    A family with task state draws the batch from it (and the current params) and
    hands back the next state: ``batch, s' = step_batch(key, task, params, s)``.
    With ``shapes`` (:func:`carry_shapes`), ``st.params`` are in the carry layout (:func:`to_carry`),
    and so are the returned ones; the update is applied in that layout.
    """
    params = from_carry(st.params, shapes)
    key = jax.random.fold_in(st.key, st.step)
    batch, task_state = family.next_batch(key, st.task, params, st.task_state)
    loss, grads = jax.value_and_grad(family.loss)(params, st.task, batch)
    updates, opt_state = opt.update(grads, st.opt_state, params, loss=loss, num_steps=st.length)
    params = optax.apply_updates(st.params, to_carry(updates, shapes))
    return st.replace(params=params, opt_state=opt_state, step=st.step + 1, task_state=task_state), loss


VALID_STREAM = 0x7A11D  # fold_in constant: validation batches get their own key stream


def valid_loss(family: TaskFamily, st: InnerState, shapes: Any = None) -> jax.Array:
    """The loss of a validation batch (``family.valid_batch``, keyed by trajectory key and step)
    at the current params: the meta-loss of a step under ``meta_loss="valid"``. ``shapes``: as in
    :func:`train_step`."""
    key = jax.random.fold_in(jax.random.fold_in(st.key, st.step), VALID_STREAM)
    return family.loss(from_carry(st.params, shapes), st.task, family.valid_batch(key, st.task))


def check_valid_data(family: TaskFamily, meta_loss: str, option: str = "meta_loss") -> None:
    """ValueError unless ``family`` has validation data where ``meta_loss`` scores it; the
    message names the setting as ``option`` (a run config spells it ``unroll.meta_loss``)."""
    if meta_loss != "train" and family.valid_batch is None:
        raise ValueError(f"{option}={meta_loss!r} needs validation data, and task_family '{family.name}' has none")


def step_meta_loss(train: jax.Array, valid: jax.Array | None, meta_loss: str, valid_share: float = 0.5) -> jax.Array:
    """A step's meta-loss from its normalised training-minibatch loss and validation-batch loss:
    ``train``, ``valid``, or under ``"both"`` ``(1 - s) train + s valid`` with ``s = valid_share``
    (a rule scored on both cannot buy a fast training loss with overfitting, nor a low validation
    loss with slow training; ``s`` sets the exchange rate, 0.5 is the plain mean)."""
    if meta_loss == "train":
        return train
    return valid if meta_loss == "valid" else (1.0 - valid_share) * train + valid_share * valid


def unroll(
    theta: Theta,
    state: InnerState,
    family: TaskFamily,
    lopt: LearnedOptimizer,
    cfg: UnrollConfig,
    num_steps: int | None = None,
) -> tuple[InnerState, TruncationLoss]:
    """Train ``num_steps`` (default: the truncation length) steps with the optimizer of ``theta``.

    The meta-loss of a step is the normalised loss of the minibatch the gradient
    is taken on, before the update (as in learned_optimization's PES), or with
    ``cfg.meta_loss="valid"`` of a validation batch at the same params (``"both"``: the mean
    of the two, :func:`step_meta_loss`), times the step's
    :func:`step_weight` under ``cfg.meta_weight``. Since
    ``T >= K``, at most one reset happens per truncation, so the fresh trajectory
    is built once, outside the scan.
    """
    k = cfg.truncation_length if num_steps is None else num_steps
    opt = lopt.optimizer(theta)
    shapes = carry_shapes(lopt, state.params)
    fresh = _in_carry(new_trajectory(state.key, theta, family, lopt, cfg), shapes)
    norm = lambda loss: normalized_loss(loss, family.loss_scale, cfg.loss_clip)  # noqa: E731

    def step(carry, _):
        st, after = carry
        reset_now = st.step >= st.length
        st = _where(reset_now, fresh, st)
        after = after | reset_now
        held = valid_loss(family, st, shapes) if cfg.meta_loss != "train" else None  # at the params before the step
        weight = step_weight(st.step, st.length, cfg.meta_weight)
        st, loss = train_step(opt, family, st, shapes)
        bad, valid = ~jnp.isfinite(loss), None
        if held is not None:
            bad, valid = bad | ~jnp.isfinite(held), norm(held)
        return (st, after), (weight * step_meta_loss(norm(loss), valid, cfg.meta_loss, cfg.valid_share), after, bad)

    carry = (_in_carry(state, shapes), jnp.zeros((), bool))
    (state, _), (meta, after, bad) = jax.lax.scan(step, carry, length=k)
    state = _in_shape(state, shapes)
    result = TruncationLoss(
        before=jnp.sum(jnp.where(after, 0.0, meta)) / k,
        after=jnp.sum(jnp.where(after, meta, 0.0)) / k,
        reset=jnp.any(after),
        nonfinite=jnp.sum(bad),
    )
    return state, result


# One validation minibatch is too small a test set: on an overfit MNIST MLP (mean test loss 0.52) one
# 64-example batch's loss ranged 0.01-1.7 (sd 0.33), six times the spread between trained models
# (experiments/ns_input, round 21). The final test loss averages this many batches (sd / 11 there),
# mapped 32 at a time so that a large model's activations are not all live at once.
FINAL_VALID_BATCHES = 128


def final_valid_loss(family: TaskFamily, state: InnerState) -> jax.Array:
    """The raw test loss at ``state``'s params: the mean loss of :data:`FINAL_VALID_BATCHES` validation
    batches, keyed apart from every per-step validation batch (:func:`valid_loss`)."""
    keys = jax.random.split(jax.random.fold_in(state.key, 2**31 - 1), FINAL_VALID_BATCHES)
    loss = lambda k: family.loss(state.params, state.task, family.valid_batch(k, state.task))  # noqa: E731
    return jax.lax.map(loss, keys, batch_size=32).mean()


@struct.dataclass
class EvalCurves:
    """One evaluation task's curves, normalised and clipped (``min(loss / scale, clip)``, NaN/inf -> clip).

    ``train[t]`` is the loss of step t's training minibatch before its update;
    ``valid[t]`` (``None`` under ``meta_loss="train"``) the loss of a validation batch at the
    same params, keyed as in :func:`valid_loss`; ``final_valid`` the test loss at the final
    params (:func:`final_valid_loss`); ``weight[t]`` step t's :func:`step_weight`;
    ``meta_loss`` and ``valid_share`` the ``unroll`` settings the curves were scored for.
    """

    train: jax.Array
    valid: jax.Array | None
    final_valid: jax.Array
    weight: jax.Array
    meta_loss: str = struct.field(pytree_node=False, default="train")
    valid_share: float = struct.field(pytree_node=False, default=0.5)

    def meta(self) -> jax.Array:
        """The curve the meta-loss averages (:func:`step_meta_loss` of each step)."""
        return step_meta_loss(self.train, self.valid, self.meta_loss, self.valid_share)

    def weighted(self) -> jax.Array:
        """``meta() * weight``: its mean over steps is the meta-loss a member's fitness estimates."""
        return self.meta() * self.weight


def eval_curves(
    theta: Theta,
    key: jax.Array,
    family: TaskFamily,
    lopt: LearnedOptimizer,
    num_steps: int,
    loss_clip: float = 1.5,
    meta_loss: str = "train",
    meta_weight: str = "uniform",
    valid_share: float = 0.5,
) -> EvalCurves:
    """Train one fresh task for ``num_steps`` in one ``lax.scan``; with ``meta_loss="valid"|"both"`` also
    score each step's params on a validation batch, as a member's fitness does under that setting
    (:func:`unroll`), so that ``mean(weighted())`` is the same quantity on this task (a trajectory
    of length ``num_steps``)."""
    cfg = UnrollConfig(num_steps, num_steps, num_steps, False, loss_clip, meta_loss, meta_weight, valid_share)
    check_valid_data(family, meta_loss)
    state = new_trajectory(key, theta, family, lopt, cfg)
    shapes = carry_shapes(lopt, state.params)
    opt = lopt.optimizer(theta)
    norm = lambda loss: normalized_loss(loss, family.loss_scale, loss_clip)  # noqa: E731

    def step(st, _):
        held = norm(valid_loss(family, st, shapes)) if meta_loss != "train" else None  # before the update
        st, loss = train_step(opt, family, st, shapes)
        return st, (norm(loss), held)

    state, (curve, valid) = jax.lax.scan(step, _in_carry(state, shapes), length=num_steps)
    state = _in_shape(state, shapes)
    final = curve[-1] if family.valid_batch is None else norm(final_valid_loss(family, state))
    weight = step_weight(jnp.arange(num_steps), jnp.asarray(num_steps), meta_weight)
    return EvalCurves(curve, valid, final, weight, meta_loss, valid_share)


def train_curve(
    theta: Theta,
    key: jax.Array,
    family: TaskFamily,
    lopt: LearnedOptimizer,
    num_steps: int,
    loss_clip: float = 1.5,
) -> tuple[jax.Array, jax.Array]:
    """Train one fresh task for ``num_steps``; return (train curve, final valid loss), normalised."""
    curves = eval_curves(theta, key, family, lopt, num_steps, loss_clip)
    return curves.train, curves.final_valid

"""PPO pieces shared by the RL task families: actor-critic MLPs, GAE, the clipped surrogate,
episode-return tracking, and :func:`rl_family`, which builds a family with persistent envs.

One inner *step* of an RL task family is one PPO update on a freshly collected
rollout (as in OPEN, Goldie et al. 2024, where the learned optimizer trains a
PPO agent). The environments persist across updates in the family's task state
(:mod:`evolopt.contracts`): each rollout continues from where the previous one
stopped, finished episodes auto-reset, so an episode can span many updates.

With ``E`` environments and ``L`` steps, rewards ``r_t``, dones ``d_t``, values
``V_t`` and the bootstrap value ``V_L``:

    delta_t = r_t + gamma V_{t+1} (1 - d_t) - V_t
    A_t     = delta_t + gamma lambda (1 - d_t) A_{t+1}          (GAE; A_L = 0)
    R_t     = A_t + V_t                                          (value targets)
    rho_t   = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t))
    L_pi    = -mean min(rho_t Â_t, clip(rho_t, 1-eps, 1+eps) Â_t)    (Â: A normalised per rollout)
    L       = L_pi + vf_coef * mean 0.5 (V(s_t) - R_t)^2 - ent_coef * mean H[pi(.|s_t)]

Every update collects new data with the current policy, so ``pi_old = pi`` and
``rho = 1`` at the point the gradient is taken: the clip is inactive and
``grad L_pi`` is the GAE policy gradient (PPO with one epoch and one minibatch).

**Meta-loss.** Each env tracks the return of its episode in progress and ``G_e``,
the return of its most recently *completed* episode (``R_low`` until one
completes). After each rollout the family reports ``R = mean_e G_e`` and its loss
*value* is ``R_high - R`` (the gradient stays the PPO loss's, see
:func:`with_meta_value`), with ``loss_scale = R_high - R_low``:

    meta-loss = (R_high - R) / (R_high - R_low) = 1 - normalised return.

Why this estimate: only complete episodes have a return comparable to the env's
range (a partial one is cut at an arbitrary point); taking each env's latest
episode weighs envs equally (a mean over the episodes completed in one rollout
would over-count short, failed episodes, and be undefined when none ends); and
before any episode has ended there is no evidence of return, so ``R_low``, the
pessimistic end. ``[R_low, R_high]`` bounds the return of a whole episode, from
the env's reward definition and time limit (see the families' modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily


def init_mlp(key: jax.Array, sizes: list[int], last_std: float) -> dict:
    """``dense_i/{kernel, bias}``: truncated normal std 1/sqrt(fan_in), the last layer ``last_std``/sqrt(fan_in)."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        std = (last_std if i == len(sizes) - 2 else 1.0) / math.sqrt(n_in)
        params[f"dense_{i}"] = {
            "kernel": jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out)) * std / 0.8796,
            "bias": jnp.zeros(n_out),
        }
    return params


def apply_mlp(params: dict, x: jax.Array) -> jax.Array:
    """tanh MLP (PPO's usual activation), linear last layer."""
    n = len(params)
    for i in range(n):
        x = x @ params[f"dense_{i}"]["kernel"] + params[f"dense_{i}"]["bias"]
        if i < n - 1:
            x = jnp.tanh(x)
    return x


def init_actor_critic(key: jax.Array, obs_dim: int, hidden: list[int], out_dim: int) -> dict:
    """Separate actor (last layer std 0.01/sqrt(fan_in): a near-uniform initial policy) and critic."""
    k_a, k_c = jax.random.split(key)
    return {
        "actor": init_mlp(k_a, [obs_dim, *hidden, out_dim], 0.01),
        "critic": init_mlp(k_c, [obs_dim, *hidden, 1], 1.0),
    }


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float, lam: float):
    """``(advantages, targets)`` for time-major ``[L, E]`` arrays (formulas in the module docstring)."""
    next_values = jnp.concatenate([values[1:], last_value[None]])
    not_done = 1.0 - dones.astype(jnp.float32)
    deltas = rewards + gamma * next_values * not_done - values

    def back(a_next, xs):
        delta, nd = xs
        a = delta + gamma * lam * nd * a_next
        return a, a

    _, adv = jax.lax.scan(back, jnp.zeros_like(last_value), (deltas, not_done), reverse=True)
    return adv, adv + values


def rollout_advantages(critic: dict, traj: dict, gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """GAE ``(advantages, targets)`` of a rollout, from the values the (stop-gradient) critic
    gives its observations ``traj["obs"]`` and the bootstrap ``traj["last_obs"]``."""
    critic = jax.lax.stop_gradient(critic)
    values = apply_mlp(critic, traj["obs"])[..., 0]
    last_value = apply_mlp(critic, traj["last_obs"])[..., 0]
    return gae(traj["reward"], values, traj["done"], last_value, gamma, lam)


def ppo_loss(
    logp: jax.Array,
    logp_old: jax.Array,
    entropy: jax.Array,
    values: jax.Array,
    advantages: jax.Array,
    targets: jax.Array,
    clip_eps: float,
    vf_coef: float,
    ent_coef: float,
) -> jax.Array:
    """The PPO objective ``L`` of the module docstring (advantages normalised here)."""
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = jnp.exp(logp - logp_old)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    value_loss = 0.5 * jnp.mean(jnp.square(values - targets))
    return -jnp.mean(surrogate) + vf_coef * value_loss - ent_coef * jnp.mean(entropy)


def track_returns(
    rewards: jax.Array, dones: jax.Array, running: jax.Array, last: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Carry episode returns through time-major ``[L, E]`` rewards and dones.

    ``running`` is each env's return so far in its current episode, ``last`` the
    return of its latest completed episode. At each step ``running += r_t``; if
    ``d_t`` (the step ended an episode, its own reward included) then
    ``last = running`` and ``running = 0``. Returns the new ``(running, last)``.
    """

    def step(carry, xs):
        run, lst = carry
        r, d = xs
        run = run + r
        return (jnp.where(d, 0.0, run), jnp.where(d, run, lst)), None

    (running, last), _ = jax.lax.scan(step, (running, last), (rewards, dones))
    return running, last


def with_meta_value(train_loss: jax.Array, meta_value: jax.Array) -> jax.Array:
    """A scalar whose *value* is ``meta_value`` and whose *gradient* is that of ``train_loss``.

    ``train_loss - stop_gradient(train_loss) + stop_gradient(meta_value)``: lets an RL
    family report "return left to gain" as its loss (what the meta-objective and the
    learned optimizer's loss input see) while the optimizer descends the PPO loss.
    """
    return train_loss - jax.lax.stop_gradient(train_loss) + jax.lax.stop_gradient(meta_value)


def resolve_return_range(env_name: str, horizon: int, given: list, default) -> tuple[float, float]:
    """``[low, high]`` of an episode's return, which normalises the meta-loss: ``given``, else
    ``default(env_name, horizon)`` for episodes of at most ``horizon`` steps (None: no default)."""
    from evolopt.registry import ConfigError

    if given:
        if len(given) != 2 or not float(given[0]) < float(given[1]):
            raise ConfigError(f"task_family.return_range={list(given)} must be [low, high] with low < high")
        return float(given[0]), float(given[1])
    found = default(env_name, horizon)
    if found is None:
        raise ConfigError(f"no default return range for env '{env_name}'; set task_family.return_range=[low,high]")
    return found


def rl_family(
    name: str,
    *,
    num_envs: int,
    reset: Callable[[jax.Array], Any],
    rollout: Callable[[Any, Any, jax.Array], tuple[dict, Any]],
    init_params: Callable[[jax.Array], dict],
    train_loss: Callable[[dict, dict], jax.Array],
    return_range: tuple[float, float],
) -> TaskFamily:
    """A PPO task family whose ``num_envs`` environments persist across updates.

    ``reset(key) -> envs`` starts the batched envs; ``rollout(params, envs, key) ->
    (traj, envs)`` runs them on with the policy of ``params`` (already
    ``stop_gradient``-ed; time-major ``traj`` with ``reward`` and ``done`` ``[L, E]``);
    ``train_loss(params, traj)`` is the PPO objective. Task state: ``{"envs", "running",
    "last"}`` (see :func:`track_returns`). ``sample_batch`` (the stateless API) gives a
    key, and ``loss`` on it rolls out from freshly reset envs.
    """
    low, high = return_range

    def init_task_state(key, task):
        del task
        return {"envs": reset(key), "running": jnp.zeros(num_envs), "last": jnp.full(num_envs, low, jnp.float32)}

    def step_batch(key, task, params, state):
        del task
        traj, envs = rollout(jax.lax.stop_gradient(params), state["envs"], key)
        running, last = track_returns(traj["reward"], traj["done"], state["running"], state["last"])
        return {"traj": traj, "return": jnp.mean(last)}, {"envs": envs, "running": running, "last": last}

    def sample_batch(key, task):
        del task
        return {"key": key}

    def loss(params, task, batch):
        if "traj" not in batch:  # a stateless batch: roll out from fresh envs
            k_reset, k_roll = jax.random.split(batch["key"])
            batch, _ = step_batch(k_roll, task, params, init_task_state(k_reset, task))
        return with_meta_value(train_loss(params, batch["traj"]), high - batch["return"])

    return TaskFamily(
        name,
        sample_task=lambda key: {},
        init_params=lambda key, task: init_params(key),
        sample_batch=sample_batch,
        loss=loss,
        loss_scale=high - low,
        init_task_state=init_task_state,
        step_batch=step_batch,
    )

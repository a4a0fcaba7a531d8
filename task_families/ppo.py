"""PPO pieces shared by the RL task families: actor-critic MLPs, GAE, the clipped surrogate.

One inner *step* of an RL task family is one PPO update on a freshly collected
rollout (as in OPEN, Goldie et al. 2024, where the learned optimizer trains a
PPO agent; there the env state persists across updates, here each update starts
from fresh resets, see :mod:`task_families.rl_gymnax`).

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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def init_mlp(key: jax.Array, sizes: list[int], last_std: float) -> dict:
    """``dense_i/{kernel, bias}``: truncated normal std 1/sqrt(fan_in), the last layer ``last_std``/sqrt(fan_in)."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        std = (last_std if i == len(sizes) - 2 else 1.0) / math.sqrt(n_in)
        params[f"dense_{i}"] = {"kernel": jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out)) * std / 0.8796, "bias": jnp.zeros(n_out)}
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


def first_episode_return(rewards: jax.Array, dones: jax.Array) -> jax.Array:
    """Per-env return of the first episode in ``[L, E]`` rollouts (truncated at L if it does not end).

    A step's reward counts while no earlier step was done (the done step's own reward counts).
    """
    before = jnp.cumsum(dones.astype(jnp.int32), axis=0) - dones.astype(jnp.int32)
    return jnp.sum(jnp.where(before == 0, rewards, 0.0), axis=0)


def with_meta_value(train_loss: jax.Array, meta_value: jax.Array) -> jax.Array:
    """A scalar whose *value* is ``meta_value`` and whose *gradient* is that of ``train_loss``.

    ``train_loss - stop_gradient(train_loss) + stop_gradient(meta_value)``: lets an RL
    family report "return left to gain" as its loss (what the meta-objective and the
    learned optimizer's loss input see) while the optimizer descends the PPO loss.
    """
    return train_loss - jax.lax.stop_gradient(train_loss) + jax.lax.stop_gradient(meta_value)


def resolve_return_range(env_name: str, rollout_steps: int, given: list, default) -> tuple[float, float]:
    """``[low, high]`` of the return that normalises the meta-loss: ``given``, else
    ``default(env_name, rollout_steps)`` (None when the env has no default)."""
    from evolopt.registry import ConfigError

    if given:
        if len(given) != 2 or not float(given[0]) < float(given[1]):
            raise ConfigError(f"task_family.return_range={list(given)} must be [low, high] with low < high")
        return float(given[0]), float(given[1])
    found = default(env_name, rollout_steps)
    if found is None:
        raise ConfigError(f"no default return range for env '{env_name}'; set task_family.return_range=[low,high]")
    return found

"""PPO agents on brax environments (continuous actions), e.g. ``inverted_pendulum`` on CPU.

Same design as :mod:`task_families.rl_gymnax` (one inner step = a fresh
``num_envs x rollout_steps`` rollout with the current policy + one PPO update;
the loss *value* is ``R_high - R`` for the mean first-episode return ``R`` and
its *gradient* is the PPO loss's; ``loss_scale = R_high - R_low``).

Policy: a Gaussian ``a ~ N(mu(s), diag(exp(2 log_std)))`` with ``mu`` a tanh MLP
and a state-independent learned ``actor_log_std/log_std`` (init 0); the env gets
``clip(a, -1, 1)`` (brax rescales [-1, 1] to the actuator range), the
log-likelihood is of the unclipped ``a``. Brax envs do not auto-reset: after an
episode ends the rollout continues from a terminal state, which only the first
episode's return and the done-masked GAE see through ``done``.

Default return range for ``L = rollout_steps``: inverted_pendulum ``[0, L]`` (reward
1 a step while the pole is up). ``backend`` picks brax's physics pipeline
(``spring`` compiles and runs fastest on CPU).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from evolopt.registry import ConfigError, register_task_family
from task_families import ppo
from task_families.base import TaskFamily, require_positive

DEFAULT_RANGES = {"inverted_pendulum": lambda n: (0.0, float(n))}
BACKENDS = ("spring", "positional", "generalized")


def gaussian_logp(a: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """``log N(a; mean, diag(exp(2 log_std)))`` summed over the last axis."""
    return jnp.sum(-0.5 * jnp.square((a - mean) / jnp.exp(log_std)) - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def make_env(env_name: str, backend: str):
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; valid choices: {', '.join(BACKENDS)}")
    from brax import envs

    names = sorted(envs._envs)  # brax keeps its registry in this dict
    if env_name not in names:
        raise ConfigError(f"unknown env '{env_name}'; valid choices: {', '.join(names)}")
    return envs.get_environment(env_name, backend=backend)


def rollout(env, mean_fn, log_std: jax.Array, key: jax.Array, num_envs: int, steps: int) -> dict:
    """Time-major ``[steps, num_envs, ...]`` rollout of the Gaussian policy."""
    k_reset, k_steps = jax.random.split(key)
    state = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))

    def step(state, k):
        obs = state.obs
        mean = mean_fn(obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        nxt = jax.vmap(env.step)(state, jnp.clip(action, -1.0, 1.0))
        out = {"obs": obs, "action": action, "logp": gaussian_logp(action, mean, log_std), "reward": nxt.reward, "done": nxt.done > 0}
        return nxt, out

    last, traj = jax.lax.scan(step, state, jax.random.split(k_steps, steps))
    traj["last_obs"] = last.obs
    return traj


@register_task_family("rl_brax")
def rl_brax(
    *,
    env: str = "inverted_pendulum",
    backend: str = "spring",
    num_envs: int = 8,
    rollout_steps: int = 64,
    hidden: list = (32, 32),
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    clip_eps: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    return_range: list = (),
) -> TaskFamily:
    """PPO on a brax env; one inner step = one rollout + one PPO update."""
    require_positive(num_envs=num_envs, rollout_steps=rollout_steps, hidden=hidden)
    brax_env = make_env(env, backend)
    default = lambda name, steps: DEFAULT_RANGES[name](steps) if name in DEFAULT_RANGES else None  # noqa: E731
    low, high = ppo.resolve_return_range(env, rollout_steps, list(return_range), default)
    obs_dim, act_dim = brax_env.observation_size, brax_env.action_size
    hidden = [int(h) for h in hidden]

    def sample_task(key):
        del key
        return {}

    def init_params(key, task):
        del task
        params = ppo.init_actor_critic(key, obs_dim, hidden, act_dim)
        params["actor_log_std"] = {"log_std": jnp.zeros(act_dim)}
        return params

    def sample_batch(key, task):
        del task
        return {"key": key}

    def loss(params, task, batch):
        frozen = jax.lax.stop_gradient(params)
        log_std_old = frozen["actor_log_std"]["log_std"]
        traj = rollout(brax_env, lambda o: ppo.apply_mlp(frozen["actor"], o), log_std_old, batch["key"], num_envs, rollout_steps)
        values_old = ppo.apply_mlp(frozen["critic"], traj["obs"])[..., 0]
        last_value = ppo.apply_mlp(frozen["critic"], traj["last_obs"])[..., 0]
        adv, targets = ppo.gae(traj["reward"], values_old, traj["done"], last_value, gamma, gae_lambda)
        log_std = params["actor_log_std"]["log_std"]
        logp = gaussian_logp(traj["action"], ppo.apply_mlp(params["actor"], traj["obs"]), log_std)
        entropy = jnp.broadcast_to(jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e)), logp.shape)
        values = ppo.apply_mlp(params["critic"], traj["obs"])[..., 0]
        train = ppo.ppo_loss(logp, traj["logp"], entropy, values, adv, targets, clip_eps, vf_coef, ent_coef)
        ret = jnp.mean(ppo.first_episode_return(traj["reward"], traj["done"]))
        return ppo.with_meta_value(train, high - ret)

    return TaskFamily("rl_brax", sample_task, init_params, sample_batch, loss, loss_scale=high - low)

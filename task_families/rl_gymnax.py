"""PPO agents on gymnax environments: the learned optimizer trains an RL agent (as in OPEN).

**What one inner step is.** ``sample_batch(key, task)`` cannot see the params,
so the batch is only a key. ``loss(params, task, batch)`` then

1. resets ``num_envs`` environments from that key and rolls out ``rollout_steps``
   steps with the *current* policy (``stop_gradient(params)``: sampling is not
   differentiated; gymnax auto-resets finished episodes);
2. computes GAE and the PPO objective on that rollout (:mod:`task_families.ppo`).

The optimizer step on its gradient is one PPO update (one epoch, one minibatch).
The env state does not persist across inner steps: every update starts from
fresh resets (the TaskFamily contract has no place for mutable env state: params
are rewritten by the optimizer and the task is fixed per trajectory). Episodes
therefore count at most ``rollout_steps`` steps.

**What the meta-loss is.** Let ``R`` be the mean over envs of the first episode's
return in the rollout (truncated at ``rollout_steps``) and ``[R_low, R_high]`` a
per-environment range (``return_range``, or the defaults below). The *value*
``loss`` returns is ``R_high - R`` while its *gradient* is the PPO loss's
(:func:`task_families.ppo.with_meta_value`), and ``loss_scale = R_high - R_low``,
so the meta-loss of a step is

    loss / loss_scale = (R_high - R) / (R_high - R_low) = 1 - normalised return,

0 for a policy reaching ``R_high`` and 1 at ``R_low``; meta-training minimises
the mean over the truncation, i.e. maximises the return along the training run
(area under the learning curve). The learned optimizer's ``loss`` input sees the
same value. Defaults, for ``L = rollout_steps``: CartPole-v1 ``[0, L]`` (reward
1 a step), Acrobot-v1 ``[-L, 0]`` (-1 a step until the goal), MinAtar games
``[0, L/10]`` (points a step are rare).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evolopt.registry import ConfigError, register_task_family
from task_families import ppo
from task_families.base import TaskFamily, require_positive

DEFAULT_RANGES = {
    "CartPole-v1": lambda n: (0.0, float(n)),
    "Acrobot-v1": lambda n: (-float(n), 0.0),
    "MountainCar-v0": lambda n: (-float(n), 0.0),
}


def default_return_range(env_name: str, rollout_steps: int) -> tuple[float, float] | None:
    if env_name in DEFAULT_RANGES:
        return DEFAULT_RANGES[env_name](rollout_steps)
    if env_name.endswith("-MinAtar"):
        return 0.0, max(1.0, rollout_steps / 10)
    return None


def make_env(env_name: str):
    """``(env, env_params, obs_dim, num_actions)``; discrete-action gymnax envs only."""
    import gymnax
    from gymnax.environments import spaces

    if env_name not in gymnax.registered_envs:
        raise ConfigError(f"unknown env '{env_name}'; valid choices: {', '.join(gymnax.registered_envs)}")
    env, env_params = gymnax.make(env_name)
    space = env.action_space(env_params)
    if not isinstance(space, spaces.Discrete):
        raise ConfigError(f"env '{env_name}' has continuous actions; rl_gymnax supports discrete ones")
    obs_shape = env.observation_space(env_params).shape
    return env, env_params, int(jnp.prod(jnp.asarray(obs_shape))), int(space.n)


def rollout(env, env_params, actor, key: jax.Array, num_envs: int, steps: int) -> dict:
    """Time-major rollout ``[steps, num_envs, ...]`` of the policy ``actor(obs) -> logits``.

    Keys: ``k_reset, k_steps = split(key)``; env ``e`` resets with ``split(k_reset, E)[e]``;
    step ``t`` uses ``k_a, k_s = split(split(k_steps, steps)[t])``.
    """
    k_reset, k_steps = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), env_params)

    def step(carry, k):
        obs, state = carry
        flat = obs.reshape(num_envs, -1).astype(jnp.float32)
        logits = actor(flat)
        k_a, k_s = jax.random.split(k)
        action = jax.random.categorical(k_a, logits)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
        obs2, state2, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_s, num_envs), state, action, env_params
        )
        done = jnp.logical_or(term, trunc)
        return (obs2, state2), {"obs": flat, "action": action, "logp": logp, "reward": reward.astype(jnp.float32), "done": done}

    (last_obs, _), traj = jax.lax.scan(step, (obs, state), jax.random.split(k_steps, steps))
    traj["last_obs"] = last_obs.reshape(num_envs, -1).astype(jnp.float32)
    return traj


@register_task_family("rl_gymnax")
def rl_gymnax(
    *,
    env: str = "CartPole-v1",
    num_envs: int = 8,
    rollout_steps: int = 64,
    hidden: list = (32, 32),
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    clip_eps: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.01,
    return_range: list = (),
) -> TaskFamily:
    """PPO on a gymnax env; one inner step = one rollout + one PPO update (see module docstring)."""
    require_positive(num_envs=num_envs, rollout_steps=rollout_steps, hidden=hidden)
    gym_env, env_params, obs_dim, num_actions = make_env(env)
    low, high = ppo.resolve_return_range(env, rollout_steps, list(return_range), default_return_range)
    hidden = [int(h) for h in hidden]

    def sample_task(key):
        del key
        return {}

    def init_params(key, task):
        del task
        return ppo.init_actor_critic(key, obs_dim, hidden, num_actions)

    def sample_batch(key, task):
        del task
        return {"key": key}

    def loss(params, task, batch):
        frozen = jax.lax.stop_gradient(params)
        traj = rollout(gym_env, env_params, lambda o: ppo.apply_mlp(frozen["actor"], o), batch["key"], num_envs, rollout_steps)
        values_old = ppo.apply_mlp(frozen["critic"], traj["obs"])[..., 0]
        last_value = ppo.apply_mlp(frozen["critic"], traj["last_obs"])[..., 0]
        adv, targets = ppo.gae(traj["reward"], values_old, traj["done"], last_value, gamma, gae_lambda)
        logits = ppo.apply_mlp(params["actor"], traj["obs"])
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, traj["action"][..., None], axis=-1)[..., 0]
        entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
        values = ppo.apply_mlp(params["critic"], traj["obs"])[..., 0]
        train = ppo.ppo_loss(logp, traj["logp"], entropy, values, adv, targets, clip_eps, vf_coef, ent_coef)
        ret = jnp.mean(ppo.first_episode_return(traj["reward"], traj["done"]))
        return ppo.with_meta_value(train, high - ret)

    return TaskFamily("rl_gymnax", sample_task, init_params, sample_batch, loss, loss_scale=high - low)

"""PPO agents on gymnax environments: the learned optimizer trains an RL agent (as in OPEN).

**What one inner step is.** The family keeps ``num_envs`` environments (gymnax
states and current observations) in its task state (:mod:`evolopt.contracts`).
``step_batch(key, task, params, state)`` rolls them on for ``rollout_steps`` steps
with the *current* policy (``stop_gradient(params)``: sampling is not
differentiated; gymnax auto-resets finished episodes) and returns the rollout and
the envs where it stopped; ``loss`` is the PPO objective on that rollout
(:mod:`evolopt.task_families.ppo`), so an optimizer step is one PPO update (one epoch, one
minibatch). The envs persist across updates, as in OPEN and purejaxrl: an episode
can last longer than a rollout (up to the env's time limit ``T``, e.g. CartPole's
500 steps). A new inner trajectory starts from fresh resets.

**What the meta-loss is.** ``R`` is the mean over envs of each env's latest
*completed* episode return (``R_low`` before its first ends; why: see
:mod:`evolopt.task_families.ppo`), ``[R_low, R_high]`` a range of episode returns
(``return_range``, or the defaults below). The *value* ``loss`` returns is
``R_high - R`` while its *gradient* is the PPO loss's, and ``loss_scale = R_high -
R_low``, so the meta-loss of a step is

    loss / loss_scale = (R_high - R) / (R_high - R_low) = 1 - normalised return,

0 for a policy reaching ``R_high`` and 1 at ``R_low``; meta-training minimises
the mean over the truncation, i.e. maximises the return along the training run
(area under the learning curve). The learned optimizer's ``loss`` input sees the
same value. Defaults, from each env's reward and time limit ``T``
(``max_steps_in_episode``): CartPole-v1 ``[0, T]`` (reward 1 a step, T = 500),
Acrobot-v1 and MountainCar-v0 ``[-T, 0]`` (-1 a step until the goal). Other envs
(MinAtar games, bsuite, ...) have no bound that their reward definition makes
tight: set ``return_range``.

**Keys.** A rollout keyed ``k``: step ``t`` uses ``k_a, k_s = split(split(k, L)[t])``
(actions from ``k_a``; env ``e`` steps with ``split(k_s, E)[e]``); fresh envs from
``k`` reset env ``e`` with ``split(k, E)[e]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily, require_positive
from evolopt.registry import ConfigError, register_task_family
from evolopt.task_families import ppo

DEFAULT_RANGES = {  # episode return bounds for time limit T
    "CartPole-v1": lambda t: (0.0, float(t)),
    "Acrobot-v1": lambda t: (-float(t), 0.0),
    "MountainCar-v0": lambda t: (-float(t), 0.0),
}


def default_return_range(env_name: str, horizon: int) -> tuple[float, float] | None:
    return DEFAULT_RANGES[env_name](horizon) if env_name in DEFAULT_RANGES else None


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


def reset(env, env_params, key: jax.Array, num_envs: int) -> tuple[jax.Array, object]:
    """``(obs, states)`` of ``num_envs`` fresh envs; env ``e`` resets with ``split(key, E)[e]``."""
    return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)


def rollout(env, env_params, actor, envs: tuple, key: jax.Array, steps: int) -> tuple[dict, tuple]:
    """``(traj, envs)``: ``steps`` steps of the policy ``actor(obs) -> logits`` from ``envs =
    (obs, states)``; ``traj`` is time-major ``[steps, E, ...]``, keys as in the module docstring."""
    num_envs = envs[0].shape[0]

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
        return (obs2, state2), {
            "obs": flat,
            "action": action,
            "logp": logp,
            "reward": reward.astype(jnp.float32),
            "done": done,
        }

    envs, traj = jax.lax.scan(step, envs, jax.random.split(key, steps))
    traj["last_obs"] = envs[0].reshape(num_envs, -1).astype(jnp.float32)
    return traj, envs


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
    """PPO on a gymnax env; one inner step = one rollout of the persistent envs + one PPO update."""
    require_positive(num_envs=num_envs, rollout_steps=rollout_steps, hidden=hidden)
    gym_env, env_params, obs_dim, num_actions = make_env(env)
    horizon = int(env_params.max_steps_in_episode)
    low, high = ppo.resolve_return_range(env, horizon, list(return_range), default_return_range)
    hidden = [int(h) for h in hidden]

    def collect(params, envs, key):
        return rollout(gym_env, env_params, lambda o: ppo.apply_mlp(params["actor"], o), envs, key, rollout_steps)

    def train_loss(params, traj):
        adv, targets = ppo.rollout_advantages(params["critic"], traj, gamma, gae_lambda)
        logp_all = jax.nn.log_softmax(ppo.apply_mlp(params["actor"], traj["obs"]))
        logp = jnp.take_along_axis(logp_all, traj["action"][..., None], axis=-1)[..., 0]
        entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
        values = ppo.apply_mlp(params["critic"], traj["obs"])[..., 0]
        return ppo.ppo_loss(logp, traj["logp"], entropy, values, adv, targets, clip_eps, vf_coef, ent_coef)

    return ppo.rl_family(
        "rl_gymnax",
        num_envs=num_envs,
        reset=lambda key: reset(gym_env, env_params, key, num_envs),
        rollout=collect,
        init_params=lambda key: ppo.init_actor_critic(key, obs_dim, hidden, num_actions),
        train_loss=train_loss,
        return_range=(low, high),
    )

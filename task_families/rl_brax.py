"""PPO agents on brax environments (continuous actions), e.g. ``inverted_pendulum`` on CPU.

Same design as :mod:`evolopt.task_families.rl_gymnax`: ``num_envs`` envs persist across
inner steps in the task state; one inner step = ``rollout_steps`` more steps of
them with the current policy + one PPO update; the loss *value* is ``R_high - R``
for ``R`` the mean over envs of the latest completed episode's return (see
:mod:`evolopt.task_families.ppo`) and its *gradient* is the PPO loss's; ``loss_scale =
R_high - R_low``.

Policy: a Gaussian ``a ~ N(mu(s), diag(exp(2 log_std)))`` with ``mu`` a tanh MLP
and a state-independent learned ``actor_log_std/log_std`` (init 0); the env gets
``clip(a, -1, 1)`` (brax rescales [-1, 1] to the actuator range), the
log-likelihood is of the unclipped ``a``.

**Episodes.** Brax envs neither auto-reset nor stop by time, so this module does
both: an episode ends when the env says ``done`` or after ``episode_length``
steps (``T``, brax's usual 1000), and the env restarts. Resetting every env at
every step would cost about a step each, so each rollout draws one fresh reset
state per env up front, and an env that ends during the rollout restarts from
that one (an env that ends twice in one rollout starts both episodes alike).
Keys: rollout keyed ``k``: ``k_reset, k_steps = split(k)``, env ``e``'s restart
state from ``split(k_reset, E)[e]``, step ``t``'s action noise from
``split(k_steps, L)[t]``; fresh envs from ``k`` reset with ``split(k, E)``.

**Default return ranges**, for episodes of at most ``T`` steps, from the rewards
in brax's source:

- ``inverted_pendulum``: reward 1 every step  ->  ``[0, T]``;
- ``inverted_double_pendulum``: reward ``10 (1 - done) - dist_penalty - vel_penalty``
  with penalties >= 0, so at most 10 a step (about 9.4 upright)  ->  ``[0, 10 T]``
  (the terminal step scores only ``-penalties``, about -1, so an episode that ends
  at once can score slightly below 0: meta-loss slightly above 1);
- ``reacher``: reward ``-|tip - target| - |a|^2``, no termination; the tip reaches
  0.21 from the centre and the target lies within 0.2 of it, and the clipped
  ``a`` has ``|a|^2 <= 2``  ->  ``[-2.41 T, 0]`` (set ``episode_length=50``, gym's
  Reacher length, to see complete episodes often).

Others reward forward velocity (hopper, walker2d, halfcheetah, ant, humanoid,
swimmer), which no definition bounds: set ``return_range``. ``backend`` picks
brax's physics pipeline (``spring`` compiles and runs fastest on CPU).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from evolopt.contracts import TaskFamily, require_positive
from evolopt.registry import ConfigError, register_task_family
from evolopt.task_families import ppo

DEFAULT_RANGES = {  # episode return bounds for episodes of at most T steps (module docstring)
    "inverted_pendulum": lambda t: (0.0, float(t)),
    "inverted_double_pendulum": lambda t: (0.0, 10.0 * t),
    "reacher": lambda t: (-2.41 * t, 0.0),
}
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


def reset(env, key: jax.Array, num_envs: int) -> dict:
    """``num_envs`` fresh envs: brax states and the steps taken in their episodes."""
    return {"state": jax.vmap(env.reset)(jax.random.split(key, num_envs)), "t": jnp.zeros(num_envs, jnp.int32)}


def rollout(
    env, mean_fn, log_std: jax.Array, envs: dict, key: jax.Array, steps: int, episode_length: int
) -> tuple[dict, dict]:
    """``(traj, envs)``: ``steps`` steps of the Gaussian policy from ``envs`` (module docstring);
    ``traj`` is time-major ``[steps, E, ...]``, ``done`` includes the time limit."""
    k_reset, k_steps = jax.random.split(key)
    restart = reset(env, k_reset, envs["t"].shape[0])["state"]

    def step(carry, k):
        state, t = carry["state"], carry["t"]
        mean = mean_fn(state.obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape)
        nxt = jax.vmap(env.step)(state, jnp.clip(action, -1.0, 1.0))
        done = (nxt.done > 0) | (t + 1 >= episode_length)
        out = {
            "obs": state.obs,
            "action": action,
            "logp": gaussian_logp(action, mean, log_std),
            "reward": nxt.reward,
            "done": done,
        }
        state = jax.tree.map(lambda r, n: jnp.where(done.reshape((-1,) + (1,) * (n.ndim - 1)), r, n), restart, nxt)
        return {"state": state, "t": jnp.where(done, 0, t + 1)}, out

    envs, traj = jax.lax.scan(step, envs, jax.random.split(k_steps, steps))
    traj["last_obs"] = envs["state"].obs
    return traj, envs


@register_task_family("rl_brax")
def rl_brax(
    *,
    env: str = "inverted_pendulum",
    backend: str = "spring",
    num_envs: int = 8,
    rollout_steps: int = 64,
    episode_length: int = 1000,
    hidden: list = (32, 32),
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    clip_eps: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    return_range: list = (),
) -> TaskFamily:
    """PPO on a brax env; one inner step = one rollout of the persistent envs + one PPO update."""
    require_positive(num_envs=num_envs, rollout_steps=rollout_steps, episode_length=episode_length, hidden=hidden)
    brax_env = make_env(env, backend)
    default = lambda name, t: DEFAULT_RANGES[name](t) if name in DEFAULT_RANGES else None  # noqa: E731
    low, high = ppo.resolve_return_range(env, episode_length, list(return_range), default)
    obs_dim, act_dim = brax_env.observation_size, brax_env.action_size
    hidden = [int(h) for h in hidden]

    def init_params(key):
        params = ppo.init_actor_critic(key, obs_dim, hidden, act_dim)
        params["actor_log_std"] = {"log_std": jnp.zeros(act_dim)}
        return params

    def collect(params, envs, key):
        mean_fn = lambda o: ppo.apply_mlp(params["actor"], o)  # noqa: E731
        return rollout(brax_env, mean_fn, params["actor_log_std"]["log_std"], envs, key, rollout_steps, episode_length)

    def train_loss(params, traj):
        adv, targets = ppo.rollout_advantages(params["critic"], traj, gamma, gae_lambda)
        log_std = params["actor_log_std"]["log_std"]
        logp = gaussian_logp(traj["action"], ppo.apply_mlp(params["actor"], traj["obs"]), log_std)
        entropy = jnp.broadcast_to(jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e)), logp.shape)
        values = ppo.apply_mlp(params["critic"], traj["obs"])[..., 0]
        return ppo.ppo_loss(logp, traj["logp"], entropy, values, adv, targets, clip_eps, vf_coef, ent_coef)

    return ppo.rl_family(
        "rl_brax",
        num_envs=num_envs,
        reset=lambda key: reset(brax_env, key, num_envs),
        rollout=collect,
        init_params=init_params,
        train_loss=train_loss,
        return_range=(low, high),
    )

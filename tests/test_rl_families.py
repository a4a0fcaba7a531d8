"""RL task families and the task-state protocol: envs persist across PPO updates (checked
against hand-run gymnax loops with the same keys), the meta-loss value is 1 - normalised
return of completed episodes, brax time limits and default return ranges, and stateless
families have no task state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evolopt.registry import TASK_FAMILIES
from evolopt.task_families import ppo
from evolopt.unroll import InnerState, train_step

FROZEN = optax.with_extra_args_support(optax.sgd(0.0))  # steps that leave the policy as it is


def trajectory(family, params, key, state_key, length: int = 1000) -> InnerState:
    """An inner trajectory at step 0 (what unroll.new_trajectory builds, with given params)."""
    task = family.sample_task(key)
    return InnerState(
        params,
        FROZEN.init(params),
        task,
        jnp.zeros((), jnp.int32),
        jnp.array(length),
        key,
        family.initial_task_state(state_key, task),
    )


def run_steps(family, st: InnerState, n: int) -> tuple[InnerState, list[float]]:
    step = jax.jit(lambda s: train_step(FROZEN, family, s))
    losses = []
    for _ in range(n):
        st, loss = step(st)
        losses.append(float(loss))
    return st, losses


def cartpole_policy(family, direction: np.ndarray) -> dict:
    """rl_gymnax params (hidden=[2]) whose actor picks action 1 iff ``direction . obs > 0``."""
    params = jax.tree.map(jnp.zeros_like, family.init_params(jax.random.key(0), {}))
    params["actor"]["dense_0"]["kernel"] = params["actor"]["dense_0"]["kernel"].at[:, 0].set(1000.0 * direction)
    params["actor"]["dense_1"]["kernel"] = jnp.array([[-50.0, 50.0], [0.0, 0.0]])
    return params


# ---------------------------------------------------------------- gymnax: persistence


def test_env_state_after_two_updates_equals_stepping_gymnax_by_hand():
    """Push left always (action 0), E=3 envs, L=8: after two updates the family's envs and
    episode returns equal 16 hand-run env.step calls per env with the documented keys."""
    import gymnax

    E, L = 3, 8
    family = TASK_FAMILIES.build("rl_gymnax", num_envs=E, rollout_steps=L, hidden=[2])
    params = cartpole_policy(family, np.zeros(4, np.float32))
    params["actor"]["dense_1"]["bias"] = jnp.array([50.0, -50.0])
    key, state_key = jax.random.key(11), jax.random.key(12)
    st, losses = run_steps(family, trajectory(family, params, key, state_key), 2)

    env, env_params = gymnax.make("CartPole-v1")
    reset_keys = jax.random.split(state_key, E)
    envs = [env.reset(reset_keys[e], env_params) for e in range(E)]
    running, last = [0.0] * E, [0.0] * E
    for update in range(2):
        for k in jax.random.split(jax.random.fold_in(key, update), L):
            env_keys = jax.random.split(jax.random.split(k)[1], E)
            for e in range(E):
                obs, state, reward, term, trunc, _ = env.step(env_keys[e], envs[e][1], 0, env_params)
                envs[e] = (obs, state)
                running[e] += float(reward)
                if term or trunc:
                    last[e], running[e] = running[e], 0.0
        assert losses[update] == pytest.approx(500.0 - np.mean(last), abs=1e-4)  # R_high - R after this update

    obs, states = st.task_state["envs"]
    for e in range(E):
        np.testing.assert_allclose(obs[e], envs[e][0], rtol=1e-5, atol=1e-6)
        for got, want in zip(jax.tree.leaves(states), jax.tree.leaves(envs[e][1])):
            np.testing.assert_allclose(got[e], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.task_state["running"], running)
    np.testing.assert_allclose(st.task_state["last"], last)
    assert min(last) >= 5  # every env finished an episode that started in the first update


def test_a_balancing_policy_scores_the_full_500_steps_only_because_envs_persist():
    """A linear policy that balances CartPole for the whole time limit (checked by a hand
    loop): with L=32 its first episodes end exactly at step 500 = update 15 (steps 481..512),
    so the reported return is R_low = 0 until then and 500 from then on."""
    import gymnax

    direction = np.array([0.1, 0.5, 1.0, 0.5], np.float32)
    env, env_params = gymnax.make("CartPole-v1")

    def hand_return(seed):
        key = jax.random.key(seed)
        obs, state = env.reset(key, env_params)

        def body(carry, k):
            obs, state, alive, ret = carry
            obs, state, r, term, trunc, _ = env.step(k, state, (obs @ direction > 0).astype(jnp.int32), env_params)
            return (obs, state, alive * (1 - (term | trunc)), ret + alive * r), None

        return jax.lax.scan(body, (obs, state, 1.0, 0.0), jax.random.split(key, 600))[0][3]

    np.testing.assert_array_equal(jax.vmap(hand_return)(jnp.arange(8)), 500.0)

    family = TASK_FAMILIES.build("rl_gymnax", num_envs=2, rollout_steps=32, hidden=[2])
    assert family.loss_scale == 500.0  # [0, T] for T = max_steps_in_episode
    params = cartpole_policy(family, direction)
    _, losses = run_steps(family, trajectory(family, params, jax.random.key(3), jax.random.key(4)), 17)
    np.testing.assert_allclose(losses[:15], 500.0)  # no episode finished yet: R = R_low = 0
    np.testing.assert_allclose(losses[15:], 0.0)  # both finished at 500: R = R_high
    fresh = family.loss(params, {}, family.sample_batch(jax.random.key(5), {}))  # stateless: 32 fresh steps
    assert float(fresh) == 500.0


def test_constant_action_from_fresh_envs_matches_an_independent_gymnax_loop():
    """Pushing left forever ends a CartPole episode after ~8-11 steps; the stateless loss
    (fresh envs, 32 steps) reports 500 - mean of each env's latest finished episode."""
    import gymnax

    family = TASK_FAMILIES.build("rl_gymnax", env="CartPole-v1", num_envs=16, rollout_steps=32, hidden=[4])
    params = jax.tree.map(jnp.zeros_like, family.init_params(jax.random.key(0), {}))
    params["actor"]["dense_1"]["bias"] = jnp.array([50.0, -50.0])  # always action 0
    family_return = 500 - float(family.loss(params, {}, family.sample_batch(jax.random.key(1), {})))

    env, env_params = gymnax.make("CartPole-v1")
    returns = []
    for seed in range(30):
        key = jax.random.key(100 + seed)
        _, state = env.reset(key, env_params)
        total, done, t = 0.0, False, 0
        while not done:
            _, state, reward, term, trunc, _ = env.step(jax.random.fold_in(key, t), state, 0, env_params)
            total, done, t = total + float(reward), bool(term or trunc), t + 1
        returns.append(total)
    assert 5 <= min(returns) and max(returns) <= 15
    assert min(returns) - 0.5 <= family_return <= max(returns) + 0.5


def test_track_returns_and_meta_value_by_hand():
    rewards = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    dones = jnp.array([[False, True], [True, False], [False, False]])
    running, last = ppo.track_returns(rewards, dones, jnp.array([5.0, 0.0]), jnp.array([-1.0, -1.0]))
    np.testing.assert_allclose(running, [1.0, 4.0])  # env 0: 5+1+1 ends, then 1; env 1: 2 ends, then 2+2
    np.testing.assert_allclose(last, [7.0, 2.0])
    train = lambda x: jnp.sum(x**2)  # noqa: E731
    value, grad = jax.value_and_grad(lambda x: ppo.with_meta_value(train(x), 42.0))(jnp.array([1.0, 2.0]))
    assert float(value) == 42.0
    np.testing.assert_allclose(grad, [2.0, 4.0])


def test_a_reset_inside_a_truncation_restarts_the_envs_of_the_new_trajectory():
    """T = 3, K = 2: the second truncation runs step 2 of trajectory 1, then trajectory 2
    (key = the old state's key) from fresh envs: its task state must equal one train_step
    from new_trajectory(key), not a continuation of the old envs."""
    from evolopt.registry import ARCHITECTURES
    from evolopt.unroll import UnrollConfig, init_inner_state, new_trajectory, unroll

    family = TASK_FAMILIES.build("rl_gymnax", num_envs=2, rollout_steps=4, hidden=[2])
    lopt = ARCHITECTURES.build("small_fc_lopt")
    theta = lopt.init_theta(jax.random.key(0))
    cfg = UnrollConfig(2, 3, 3, False)
    st = init_inner_state(jax.random.key(1), theta, family, lopt, cfg)
    run = jax.jit(lambda s: unroll(theta, s, family, lopt, cfg))
    st, first = run(st)
    assert bool(first.reset) and int(st.step) == 2  # the first truncation starts trajectory 1
    old_key = st.key
    st, second = run(st)
    assert bool(second.reset) and int(st.step) == 1
    want, _ = train_step(lopt.optimizer(theta), family, new_trajectory(old_key, theta, family, lopt, cfg))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), st.task_state, want.task_state)


# ---------------------------------------------------------------- brax


def test_brax_envs_restart_at_the_time_limit():
    """inverted_pendulum with a zero action stays up for > 8 steps; with episode_length=5 and
    L=4, after 2 updates (8 steps) each env finished one 5-step episode (reward 1 a step)
    and is 3 steps into the next."""
    family = TASK_FAMILIES.build("rl_brax", num_envs=3, rollout_steps=4, episode_length=5, hidden=[2])
    assert family.loss_scale == 5.0
    params = jax.tree.map(jnp.zeros_like, family.init_params(jax.random.key(0), {}))
    params["actor_log_std"]["log_std"] = jnp.full(1, -20.0)  # a = 0
    st, losses = run_steps(family, trajectory(family, params, jax.random.key(1), jax.random.key(2)), 2)
    np.testing.assert_array_equal(st.task_state["envs"]["t"], [3, 3, 3])
    np.testing.assert_allclose(st.task_state["last"], 5.0)
    np.testing.assert_allclose(st.task_state["running"], 3.0)
    assert losses == pytest.approx([5.0, 0.0], abs=1e-5)  # R = R_low = 0 after update 0, R = 5 = R_high after update 1


@pytest.mark.parametrize("env", ["inverted_pendulum", "inverted_double_pendulum", "reacher"])
def test_brax_default_ranges_bound_the_rewards_of_random_play(env):
    """Per-step rewards of uniformly random actions from random resets, before an episode's
    terminal step, lie in [low, high] / T (the terminal step of inverted_double_pendulum
    drops the alive bonus and scores -penalties, about -1: documented, not bounded)."""
    from brax import envs

    family = TASK_FAMILIES.build("rl_brax", env=env, episode_length=100)
    ranges = {"inverted_pendulum": (0.0, 1.0), "inverted_double_pendulum": (0.0, 10.0), "reacher": (-2.41, 0.0)}
    per_step_low, per_step_high = ranges[env]
    assert family.loss_scale == pytest.approx(100 * (per_step_high - per_step_low))
    e = envs.get_environment(env, backend="spring")

    def play(key):
        def step(state, k):
            nxt = e.step(state, jax.random.uniform(k, (e.action_size,), minval=-1.0, maxval=1.0))
            return nxt, (nxt.reward, nxt.done)

        return jax.lax.scan(step, e.reset(key), jax.random.split(jax.random.fold_in(key, 1), 40))[1]

    rewards, dones = jax.jit(jax.vmap(play))(jax.random.split(jax.random.key(7), 16))
    alive = jnp.cumsum(dones, axis=1) == 0  # steps before the first done
    r = np.asarray(rewards)[np.asarray(alive)]
    assert per_step_low - 1e-5 <= r.min() and r.max() <= per_step_high + 1e-5


# ---------------------------------------------------------------- stateless families


@pytest.mark.parametrize("name, options", [("quadratic", {}), ("image_mlp", {"batch_size": 8})])
def test_stateless_families_have_no_task_state_and_draw_sample_batch(name, options):
    """No task state: () with no leaves, and train_step draws sample_batch."""
    family = TASK_FAMILIES.build(name, **options)
    assert not family.stateful and family.initial_task_state(jax.random.key(0), {}) == ()
    key = jax.random.key(1)
    task = family.sample_task(key)
    params = family.init_params(key, task)
    opt = optax.with_extra_args_support(optax.adam(0.0))
    st = InnerState(params, opt.init(params), task, jnp.zeros((), jnp.int32), jnp.array(10), key)
    assert not jax.tree.leaves(st.task_state)
    st2, loss = train_step(opt, family, st)
    want = family.loss(params, task, family.sample_batch(jax.random.fold_in(key, 0), task))
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    assert st2.task_state == ()

"""Strategies: persistent estimators against autodiff truths, resets, staggering, evosax wrappers.

The estimator tests use one meta-problem, small enough to differentiate exactly: SGD with
momentum on a 4-d quadratic (curvatures 1, 0.3, 0.1, 0.03), theta = (log lr, momentum
logit) = (log 0.3, 0), through :func:`evolopt.unroll.unroll` (truncations of K = 10 steps,
trajectories of T steps). Every particle trains the same trajectories (one key), so the
only randomness is the perturbations. Truth: ``grad E[sum_j L_j(theta + delta_j)]`` by
autodiff through the whole unroll, averaged over 512 draws of the per-truncation
perturbations with the strategies' sigma = 0.01 (the smoothed objective's gradient; its
Monte-Carlo error is ~1e-5, a hundredth of the estimators' standard error).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import evolopt.architectures  # noqa: F401
import evolopt.strategies  # noqa: F401
import evolopt.task_families  # noqa: F401
from evolopt.architectures.base import LearnedOptimizer
from evolopt.config import load_config
from evolopt.contracts import TaskFamily
from evolopt.loop import build
from evolopt.meta import MetaTrainer, population_mesh
from evolopt.registry import STRATEGIES, ConfigError, factory_defaults
from evolopt.strategies.base import NoiseSchedule, OuterOptimizer, option_sets
from evolopt.strategies.nres import NRES
from evolopt.strategies.pes import PES
from evolopt.unroll import TruncationLoss, UnrollConfig, init_inner_state, unroll

H = jnp.array([1.0, 0.3, 0.1, 0.03])
SIGMA, K, GENS, PAIRS = 0.01, 10, 10, 2048
THETA0 = jnp.array([np.log(0.3), 0.0])


def quadratic_family(random_centres: bool = True) -> TaskFamily:
    def sample_task(key):
        return {"c": jax.random.normal(key, (4,)) if random_centres else jnp.array([1.0, -1.0, 1.0, -1.0])}

    return TaskFamily(
        "test_quadratic",
        sample_task,
        lambda key, task: {"x": jnp.zeros(4)},
        lambda key, task: {},
        lambda p, task, batch: 0.5 * jnp.sum(H * jnp.square(p["x"] - task["c"])),
        1.0,
    )


def sgdm(theta):
    return optax.with_extra_args_support(optax.sgd(jnp.exp(theta[0]), momentum=jax.nn.sigmoid(theta[1])))


LOPT = LearnedOptimizer("test_sgdm", lambda key: THETA0, sgdm, {})
FAMILY = quadratic_family()


def truth(cfg: UnrollConfig, inner0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of grad_theta sum_j L_j(theta + delta_j), delta_j ~ N(0, sigma^2)."""

    def total(thetas):  # [GENS, D]: truncation j trains with thetas[j]
        def gen(st, th):
            st, loss = unroll(th, st, FAMILY, LOPT, cfg)
            return st, loss.total

        return jnp.sum(jax.lax.scan(gen, inner0, thetas)[1])

    z = jax.random.normal(jax.random.key(1), (512, GENS, THETA0.size))
    grads = jax.jit(jax.vmap(lambda z: jax.grad(total)(THETA0 + SIGMA * z).sum(0)))(z)
    return np.asarray(grads.mean(0)), np.asarray(grads.std(0) / np.sqrt(len(z)))


def particle_totals(es: PES, cfg: UnrollConfig, inner0) -> np.ndarray:
    """[P, D]: each particle's estimates summed over GENS truncations, theta held fixed.

    Runs the strategy's own ask/tell; tell's update (with sgd(1)) is checked to be the
    mean of the per-particle estimates, then the mean is put back."""
    state = es.init(jax.random.key(0), THETA0)
    inner = jax.tree.map(lambda x: jnp.broadcast_to(x, (es.population_size, 1) + x.shape), inner0)
    run = jax.jit(jax.vmap(jax.vmap(lambda th, st: unroll(th, st, FAMILY, LOPT, cfg), (None, 0))))
    total = 0.0
    for g in range(GENS):
        population, state = es.ask(jax.random.key(100 + g), state)
        inner, losses = run(population, inner)
        grads, _ = es.particle_estimates(state, losses)
        new, _ = es.tell(jax.random.key(0), population, losses, state)
        np.testing.assert_allclose(state.mean - new.mean, grads.mean((0, 1)), rtol=1e-4, atol=1e-7)
        state = new.replace(mean=state.mean)
        total = total + grads[:, 0]
    return np.asarray(total)


def make(cls: type, **kw) -> PES:
    return cls(2 * PAIRS, THETA0, 1, optax.sgd(1.0), optax.constant_schedule(SIGMA), **kw)


class NoSplit(PES):
    """Wrong on purpose: credits the whole truncation, after-reset steps included, to acc + pert."""

    def particle_estimates(self, state, losses):
        p = self.num_pairs
        score = state.pert / jnp.square(state.pert_std)[:, None]
        xi = state.accum + score[:, None]
        d_total = 0.5 * (losses.total[:p] - losses.total[p:])
        return d_total[..., None] * xi, jnp.where(losses.reset[:p, :, None], score[:, None], xi)


class ResetToZero(PES):
    """Wrong on purpose: a reset empties the accumulator, forgetting the current perturbation."""

    def particle_estimates(self, state, losses):
        grads, accum = super().particle_estimates(state, losses)
        return grads, jnp.where(losses.reset[: self.num_pairs, :, None], 0.0, accum)


def z_score(totals: np.ndarray, true: np.ndarray, true_se: np.ndarray) -> np.ndarray:
    se = totals.std(0) / np.sqrt(len(totals))
    return (totals.mean(0) - true) / np.sqrt(se**2 + true_se**2)


@pytest.mark.slow
def test_pes_is_unbiased_and_truncated_es_is_not():
    """T = 100 in 10 truncations of 10, 2048 pairs. Measured (d/d log lr, d/d momentum logit):
    truth (-0.0744, -0.0316); PES (-0.0751, -0.0320), SE (0.0021, 0.0017), z = (-0.3, -0.2);
    truncated ES (-0.0372, -0.0123), half the truth, z = (37, 22)."""
    cfg = UnrollConfig(K, 100, 100, False, 1e9)
    inner0 = init_inner_state(jax.random.key(5), THETA0, FAMILY, LOPT, cfg)
    true, true_se = truth(cfg, inner0)
    pes = particle_totals(make(PES), cfg, inner0)
    assert np.all(np.abs(z_score(pes, true, true_se)) < 4), (pes.mean(0), true)
    tes = particle_totals(make(PES, persistent=False), cfg, inner0)
    assert np.max(np.abs(z_score(tes, true, true_se))) > 10, (tes.mean(0), true)


@pytest.mark.slow
def test_resets_inside_truncations():
    """T = 25, K = 10: trajectories restart at steps 25, 50 (on a boundary) and 75, so truncations
    3 and 8 are split. Measured: truth (-0.3256, -0.1076); PES (-0.3267, -0.1131), z = (-0.2, -1.3);
    truncated ES z = (45, 25); resetting the accumulator to 0 (not to the current perturbation)
    z = (32, 17). Not splitting (crediting after-reset steps to acc + pert) is *also unbiased*
    (the extra credit is zero-mean and independent of the new trajectory), z = (-0.8, -1.7), only
    noisier: per-particle variance x1.17 and x1.31. NRES (noise redrawn after a reset): z = (0.8, -0.6)."""
    cfg = UnrollConfig(K, 25, 25, False, 1e9)
    inner0 = init_inner_state(jax.random.key(5), THETA0, FAMILY, LOPT, cfg)
    true, true_se = truth(cfg, inner0)

    pes = particle_totals(make(PES), cfg, inner0)
    assert np.all(np.abs(z_score(pes, true, true_se)) < 4), (pes.mean(0), true)
    nres = particle_totals(make(NRES), cfg, inner0)
    assert np.all(np.abs(z_score(nres, true, true_se)) < 4), (nres.mean(0), true)
    no_split = particle_totals(make(NoSplit), cfg, inner0)
    assert np.all(np.abs(z_score(no_split, true, true_se)) < 4), (no_split.mean(0), true)
    assert np.all(no_split.var(0) > pes.var(0))  # same perturbations: only the extra credit differs
    for wrong in (make(ResetToZero), make(PES, persistent=False)):
        totals = particle_totals(wrong, cfg, inner0)
        assert np.max(np.abs(z_score(totals, true, true_se))) > 10, (type(wrong).__name__, totals.mean(0), true)


def influence_balancing(persistent: bool, iterations: int = 2000) -> np.ndarray:
    """Tallec & Ollivier's problem as in PES [Vicol et al. 2021, section 5.1]: state s in R^23,
    s <- A s + theta (1,...,1 (10x), -1,...,-1 (13x)), A = (I + upper shift) / 2, s0 = 1, one
    step per truncation, loss 0.5 (s_0 - 1)^2, never reset; 1000 pairs, sigma 0.1, SGD 1e-4
    from theta = 0.5 (the paper's settings). Returns theta per iteration."""
    n = 23
    a = 0.5 * jnp.eye(n) + 0.5 * jnp.eye(n, k=1)
    sign = jnp.where(jnp.arange(n) < 10, 1.0, -1.0)
    es = PES(2000, jnp.zeros(1), 1, optax.sgd(1e-4), optax.constant_schedule(0.1), persistent=persistent)
    no_reset = jnp.zeros((2000, 1))

    def generation(carry, key):
        state, s = carry
        population, state = es.ask(key, state)
        s = s @ a.T + population * sign
        loss = TruncationLoss(0.5 * jnp.square(s[:, :1] - 1.0), no_reset, no_reset.astype(bool), no_reset.astype(int))
        state, _ = es.tell(key, population, loss, state)
        return (state, s), state.mean[0]

    carry = (es.init(jax.random.key(0), jnp.array([0.5])), jnp.ones((2000, n)))
    keys = jax.random.split(jax.random.key(1), iterations)
    return np.asarray(jax.jit(lambda c, k: jax.lax.scan(generation, c, k))(carry, keys)[1])


def test_influence_balancing():
    """The long-run state has s_0 = -6 theta, so the answer is theta* = -1/6 (loss 0). Measured:
    PES 0.5 -> -0.146 (500 its) -> -0.1666205 (1500) -> -0.1666635 (2000); truncated ES sees
    only theta's immediate, positive influence on s_0 and runs away: 0.5 -> 0.67 (500) ->
    1.30 (1500) -> 1.77 (2000), and on (3.2 at 3000)."""
    pes = influence_balancing(persistent=True)
    assert abs(pes[-1] + 1 / 6) < 1e-3, pes[::250]
    tes = influence_balancing(persistent=False)
    assert tes[-1] > 1.0 and tes[-1] > tes[len(tes) // 2] > 0.5, tes[::250]


def losses(before, after, reset) -> TruncationLoss:
    b = jnp.asarray(before, jnp.float32)[:, None]
    return TruncationLoss(
        b, jnp.asarray(after, jnp.float32)[:, None], jnp.asarray(reset)[:, None], jnp.zeros_like(b, jnp.int32)
    )


def test_pes_accumulators_by_hand():
    """Two pairs, one task, D = 1, sigma halving each generation (0.5 then 0.25). Generation 0:
    pair 0 restarts, pair 1 not. Generation 1: no restarts. Accumulators hold delta / sigma^2
    with each delta's own sigma; the update follows the split formula."""
    es = PES(4, jnp.zeros(1), 1, optax.sgd(1.0), lambda g: 0.5 * 0.5**g)
    state = es.init(jax.random.key(0), jnp.zeros(1))

    pop, state = es.ask(jax.random.key(1), state)
    d0 = np.asarray(state.pert[:, 0])
    np.testing.assert_allclose(np.asarray(pop[:, 0]), np.concatenate([d0, -d0]))
    np.testing.assert_allclose(float(state.std), 0.5)
    split = losses([1.0, 2.0, 0.5, 1.0], [3.0, 0.0, 1.0, 0.0], [1, 0, 1, 0])
    new, metrics = es.tell(jax.random.key(2), pop, split, state)
    s0 = d0 / 0.25
    np.testing.assert_allclose(np.asarray(new.accum[:, 0, 0]), s0, rtol=1e-6)  # reset -> pert; else 0 + pert
    g0 = (0.5 * (0.5 * s0[0] + 2.0 * s0[0]) + 0.5 * (1.0 * s0[1])) / 2  # [(dB xi + dA score) / 2] mean over pairs
    np.testing.assert_allclose(float(-new.mean[0]), g0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(es.fitness(split)), [4.0, 2.0, 1.5, 1.0])  # logged: before + after
    assert metrics == {} and int(new.generation) == 1  # the trainer computes fitness, once

    pop, state = es.ask(jax.random.key(3), new)
    d1 = np.asarray(state.pert[:, 0])
    np.testing.assert_allclose(float(state.std), 0.25)  # no lag: generation 1 draws with sigma(1)
    new, _ = es.tell(jax.random.key(4), pop, losses([1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0]), state)
    np.testing.assert_allclose(np.asarray(new.accum[:, 0, 0]), s0 + d1 / 0.0625, rtol=1e-5)

    pop, state = es.ask(jax.random.key(5), new)
    new, _ = es.tell(jax.random.key(6), pop, losses([0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]), state)
    np.testing.assert_allclose(np.asarray(new.accum[:, 0, 0]), np.asarray(state.pert[:, 0]) / 0.125**2, rtol=1e-5)


def test_nres_reuses_noise_until_a_reset():
    """Two pairs, two tasks, D = 2: a pair keeps its delta until one of its trajectories restarts;
    every trajectory credits each distinct delta it has seen once."""
    es = NRES(4, jnp.zeros(2), 2, optax.sgd(1.0), optax.constant_schedule(0.1))
    state = es.init(jax.random.key(0), jnp.zeros(2))
    no_reset = TruncationLoss(jnp.ones((4, 2)), jnp.ones((4, 2)), jnp.zeros((4, 2), bool), jnp.zeros((4, 2), jnp.int32))
    score = lambda d: jnp.broadcast_to(d[:, None] / 0.01, (2, 2, 2))  # noqa: E731

    pop, state = es.ask(jax.random.key(1), state)
    first = state.pert
    state, _ = es.tell(jax.random.key(2), pop, no_reset, state)
    np.testing.assert_allclose(state.accum, score(first), rtol=1e-6)

    pop, state = es.ask(jax.random.key(3), state)
    np.testing.assert_array_equal(state.pert, first)  # reused, and not credited twice
    one_reset = no_reset.replace(reset=jnp.zeros((4, 2), bool).at[1, 0].set(True).at[3, 0].set(True))
    state, _ = es.tell(jax.random.key(4), pop, one_reset, state)
    np.testing.assert_allclose(state.accum, score(first), rtol=1e-6)  # the restarted one has seen `first` too
    np.testing.assert_array_equal(np.asarray(state.redraw), [False, True])

    pop, state = es.ask(jax.random.key(5), state)
    np.testing.assert_array_equal(state.pert[0], first[0])
    assert not np.allclose(state.pert[1], first[1])  # pair 1 redraws after its task 0 restarted
    new = state.pert
    state, _ = es.tell(jax.random.key(6), pop, no_reset, state)
    np.testing.assert_allclose(state.accum[0], score(first)[0], rtol=1e-6)
    np.testing.assert_allclose(state.accum[1], score(first + new)[1], rtol=1e-5)


TINY = [
    "task_family=quadratic",
    "arch=adam_hparams",
    "population_size=8",
    "tasks_per_member=2",
    "unroll.truncation_length=5",
    "unroll.min_length=20",
    "unroll.max_length=40",
    "unroll.stagger=true",
]


@pytest.mark.parametrize("name", ["pes", "nres"])
def test_staggered_generation_through_the_registry(name):
    """Staggered trajectories start at different steps per pair and task, the same within a pair;
    a generation updates theta and fills accumulators of shape [pairs, tasks, D]."""
    trainer, theta0 = build(load_config(TINY + [f"strategy={name}"]))
    state = trainer.init(jax.random.key(0), theta0)
    steps = np.asarray(state.inner.step)
    np.testing.assert_array_equal(steps[:4], steps[4:])
    assert len(np.unique(steps[:4])) > 4, steps
    new, metrics = jax.jit(trainer.step)(state)
    assert new.strategy.accum.shape == (4, 2, 4)
    assert np.all(np.isfinite(np.asarray(new.strategy.accum)))
    assert float(metrics["theta/update_norm"]) > 0
    assert trainer.strategy.num_tasks == 2  # the trainer's tasks_per_member, not an option of its own
    with pytest.raises(ConfigError, match="unknown key 'strategy.tasks_per_member'"):
        load_config(TINY + [f"strategy={name}", "strategy.tasks_per_member=2"])


@pytest.mark.slow
def test_cma_es_finds_the_best_learning_rate_and_momentum():
    """strategy=cma_es (sigma 0.5, population 8, 40 generations) on SGD-momentum's mean loss over
    20 steps of one fixed quadratic. Optimum by grid + Newton: (log lr, logit b) ~ (0.284, -1.258),
    loss 0.05474; CMA-ES reaches it to within 0.02 in each coordinate (measured ~1e-3)."""
    family = quadratic_family(random_centres=False)
    cfg = UnrollConfig(20, 20, 20, False, 1.5)

    def meta_loss(theta):
        return unroll(theta, init_inner_state(jax.random.key(0), theta, family, LOPT, cfg), family, LOPT, cfg)[1].total

    a, b = jnp.linspace(-3, 1.5, 91), jnp.linspace(-4, 6, 101)
    grid = jax.jit(jax.vmap(jax.vmap(lambda x, y: meta_loss(jnp.array([x, y])), (None, 0)), (0, None)))(a, b)
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    best = jnp.array([a[i], b[j]])
    for _ in range(5):  # Newton from the grid point
        best = best - jnp.linalg.solve(jax.hessian(meta_loss)(best), jax.grad(meta_loss)(best))

    strategy = STRATEGIES.build("cma_es", 8, THETA0, 40, sigma=0.5)
    trainer = MetaTrainer(strategy, family, LOPT, cfg, 1, population_mesh())
    state = trainer.init(jax.random.key(0), jnp.array([np.log(0.1), 0.0]))
    step = jax.jit(trainer.step)
    for _ in range(40):
        state, _ = step(state)
    found = strategy.mean(state.strategy)
    np.testing.assert_allclose(found, best, atol=0.02)
    assert float(meta_loss(found)) < float(meta_loss(best)) + 1e-5


def test_evosax_by_name_through_the_registry():
    cfg = load_config(TINY[:-1] + ["strategy=evosax", "strategy.algorithm=SNES", "strategy.sigma=0.05"])
    trainer, theta0 = build(cfg)
    state = trainer.init(jax.random.key(0), theta0)
    new, metrics = jax.jit(trainer.step)(state)
    assert np.isfinite(float(metrics["fitness/mean"])) and float(metrics["theta/update_norm"]) > 0
    np.testing.assert_allclose(np.asarray(state.strategy.std), 0.05)  # sigma reaches SNES as std_init


def test_evosax_option_errors():
    theta0 = jnp.zeros(3)
    with pytest.raises(ConfigError, match=r"unknown evosax algorithm 'Nope'; valid choices: .*CMA_ES.*SNES") as e:
        STRATEGIES.build("evosax", 8, theta0, 10, algorithm="Nope")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="use strategy=pes"):
        STRATEGIES.build("evosax", 8, theta0, 10, algorithm="PersistentES")
    with pytest.raises(ConfigError, match="learning_rate does not apply to CMA_ES"):
        STRATEGIES.build("evosax", 8, theta0, 10, algorithm="CMA_ES", learning_rate=0.1)
    with pytest.raises(ConfigError, match="optimizer does not apply to CMA_ES"):
        STRATEGIES.build("evosax", 8, theta0, 10, algorithm="CMA_ES", optimizer="adam")
    assert STRATEGIES.build("evosax", 8, theta0, 10, algorithm="PSO", sigma=0.2).init_std == 0.2


def test_outer_options_are_declared_once_and_reach_optax():
    """Every strategy with an outer optimizer / noise schedule takes those dataclasses' fields as
    options, with its own defaults. Set options reach the optax transformation: sgdm with
    b1 = 0.5, lr 0.1 after a linear warmup of 2 generations, on constant gradients g = 1, moves
    by -lr_t m_t with m_t = 1 + 0.5 m_{t-1} = (1, 1.5, 1.75, 1.875) and lr_t = (0, 0.05, 0.1, 0.1)."""
    outer = [f.name for f in dataclasses.fields(OuterOptimizer)]
    noise = [f.name for f in dataclasses.fields(NoiseSchedule)]
    for name in ("pes", "nres", "open_es", "evosax"):
        assert set(outer + noise) <= set(STRATEGIES.defaults(name)), name
    assert STRATEGIES.defaults("pes")["optimizer"] == "adamw" and STRATEGIES.defaults("pes")["weight_decay"] == 1e-4
    assert (
        STRATEGIES.defaults("open_es")["optimizer"] == "adam"
        and STRATEGIES.defaults("evosax")["optimizer"] == "default"
    )

    es = STRATEGIES.build("pes", 4, jnp.zeros(2), 10, optimizer="sgdm", learning_rate=0.1, warmup=2, b1=0.5, sigma=0.3)
    opt_state, moves = es.optimizer.init(jnp.zeros(2)), []
    for _ in range(4):
        update, opt_state = es.optimizer.update(jnp.ones(2), opt_state)
        moves.append(float(update[0]))
    np.testing.assert_allclose(moves, [0.0, -0.075, -0.175, -0.1875], rtol=1e-6)
    assert float(es.std_schedule(5)) == pytest.approx(0.3)

    with pytest.raises(ConfigError, match=r"^strategy.b1='x' must be of type float \(default 0.9\)$"):
        STRATEGIES.build("nres", 4, jnp.zeros(2), 10, b1="x")
    with pytest.raises(ConfigError, match="b2 does not apply to CMA_ES: it only applies with strategy.optimizer set"):
        STRATEGIES.build("evosax", 8, jnp.zeros(3), 10, algorithm="CMA_ES", b2=0.99)


def test_option_sets_splice_fields_into_the_signature():
    """The decorated factory takes the fields (not the set) by keyword, rejects unknown ones, and
    the original receives one instance with the given values over the declared defaults."""

    @option_sets(noise=NoiseSchedule(sigma=0.5))
    def factory(n, *, noise, scale=1.0):
        return n, noise, scale

    assert factory_defaults(factory) == {"sigma": 0.5, "sigma_decay": 1.0, "sigma_min": 0.0, "scale": 1.0}
    assert factory(3, sigma_min=0.1) == (3, NoiseSchedule(sigma=0.5, sigma_min=0.1), 1.0)
    with pytest.raises(TypeError):
        factory(3, noise=NoiseSchedule())
    with pytest.raises(TypeError, match="no parameter 'outer'"):
        option_sets(outer=OuterOptimizer())(factory.__wrapped__)

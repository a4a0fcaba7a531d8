"""``evolopt.diagnose``: the ES estimate against jax.grad of the same objective, a biased
estimator caught, closed-form checks of the SNR algebra and the smoothing gap, and the CLI's
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from evolopt import gradient_alignment as ga
from evolopt import gradient_probe as gp
from evolopt.config import load_config
from evolopt.diagnose import diagnose, parse_options

# One truncation covers the whole trajectory (T = K = 20, no stagger): PES, truncated and
# full-unroll ES all estimate the gradient of the same smoothed objective.
QUAD = [
    "task_family=quadratic",
    "arch=adam_hparams",
    "strategy=open_es",
    "tasks_per_member=1",
    "unroll.truncation_length=20",
    "unroll.min_length=20",
    "unroll.max_length=20",
    "unroll.stagger=false",
    "task_family.dim=4",
    "evaluation.steps=20",
    "evaluation.num_tasks=4",
]
QUICK = ["pairs=4,16,128", "repeats=3", "truncations=1", "sigmas=none", "ref_particles=64", "full=false"]


def _run(tmp_path, *extra):
    opts, overrides = parse_options([*QUICK, f"out={tmp_path / 'd'}", *extra])
    return diagnose(load_config(overrides + QUAD), opts)


@pytest.fixture(scope="module")
def unbiased(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("diag"))


def test_es_estimate_converges_to_the_autodiff_gradient(unbiased):
    cos = [row["cos_autodiff"] for row in unbiased["rows"]]
    assert [row["pairs"] for row in unbiased["rows"]] == [4, 16, 128]
    assert cos[-1] >= 0.9, cos
    assert cos[0] < cos[1] < cos[2], cos
    # the reference itself is precise here, and the mean of all particles agrees with it
    assert unbiased["autodiff"]["cos_halves"] > 0.95
    assert not unbiased["estimators"]["truncated"]["bias_flag"]
    # independent estimates agree more as the population grows, as the measured SNR predicts
    indep = [row["cos_independent"] for row in unbiased["rows"]]
    assert indep[-1] > indep[0]
    assert abs(indep[-1] - unbiased["rows"][-1]["cos_independent_predicted"]) < 0.15


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("diag"), "inject_bias=1.0", "seed=1")  # another seed than unbiased's


def test_a_biased_estimator_is_caught(biased, unbiased):
    # a bias as large as the gradient, orthogonal to it: cosine -> 1/sqrt(2) however many pairs
    assert biased["rows"][-1]["cos_autodiff"] < 0.8 < unbiased["rows"][-1]["cos_autodiff"]
    assert biased["estimators"]["truncated"]["bias_flag"]
    # independent estimates share the bias, so they alone cannot reveal it
    assert biased["rows"][-1]["cos_independent"] > 0.8


def test_snr_algebra_matches_a_known_signal_and_noise():
    rng = np.random.default_rng(0)
    g = np.array([3.0, 4.0, 0.0, 0.0])  # |g|^2 = 25
    parts = g + rng.normal(0.0, 5.0, size=(20000, 4))  # noise trace 4 * 25 = 100
    s = gp.snr(parts)
    assert s["signal"] == pytest.approx(25.0, rel=0.05)
    assert s["noise"] == pytest.approx(100.0, rel=0.05)
    # a mean of m = c^2/(1-c^2)/rho particles has cosine c with g
    m = round(gp.particles_for_cosine(0.25, 0.9))
    cosines = [gp.cosine(parts[i * m : (i + 1) * m].mean(0), g) for i in range(20000 // m)]
    assert np.sqrt(np.mean(np.square(cosines))) == pytest.approx(0.9, abs=0.03)


def test_pes_matches_truncated_es_on_the_first_truncation_and_accumulates_after():
    probe = gp.Probe(None, None, None, {"x": np.zeros(3)}, sigma=0.5, truncations=2)
    deltas = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    zero = np.zeros(2)
    plus = gp.TruncationLoss(before=np.array([2.0, 3.0]), after=zero, reset=zero.astype(bool), nonfinite=zero)
    minus = gp.TruncationLoss(before=np.array([1.0, 1.0]), after=zero, reset=zero.astype(bool), nonfinite=zero)
    est = gp.pair_estimates(probe, plus, minus, deltas)
    # score_j = delta_j / 0.25; PES credits truncation 2's difference (1.0) to both deltas
    np.testing.assert_allclose(est["truncated"], [0.5 * 0.5 * 4, 0.5 * 1.0 * 4, 0.0])
    np.testing.assert_allclose(est["pes"], [0.5 * (0.5 * 4 + 1.0 * 4), 0.5 * 1.0 * 4, 0.0])


@pytest.mark.parametrize(
    "arg, message",
    [
        ("pairs=8,x", "pairs='8,x' must be a comma-separated list of integers >= 1"),
        ("pairs=0", "pairs='0' must be a comma-separated list of integers >= 1"),
        ("repeats=1", "repeats=1 must be >= 2"),
        ("sigmas=0.01,-1", "sigmas='0.01,-1' must be a comma-separated list of positive numbers"),
        ("autodiff=maybe", "bad autodiff='maybe'; valid choices: auto, true, false"),
        ("estimator=nope", "bad estimator='nope'; valid choices: auto, pes, truncated, full"),
        ("theta_init=nope", "theta_init='nope' is not a valid choice for arch 'adam_hparams'"),
        ("strategy.sgma=1", "unknown key 'strategy.sgma'"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_nothing_written(tmp_path, arg, message):
    out = tmp_path / "out"
    result = run_cli(*QUAD, "pairs=2", "repeats=2", "sigmas=none", f"out={out}", arg, module="evolopt.diagnose")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_cli_writes_json_md_and_tensorboard_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    args = [
        *QUAD,
        "pairs=2,8",
        "repeats=2",
        "ref_particles=8",
        "sigmas=0.01,0.1",
        "gap_samples=1",
        "full=false",
        "radii=0.1",
        f"out={out}",
    ]
    result = run_cli(*args, module="evolopt.diagnose")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "diagnose.json").read_text())
    assert [r["pairs"] for r in report["rows"]] == [2, 8]
    assert {"cos_autodiff", "cos_independent", "population_size"} <= set(report["rows"][0])
    assert [g["sigma"] for g in report["smoothing_gap"]] == [0.01, 0.1]
    assert "| pairs |" in (out / "diagnose.md").read_text()
    # a step down the estimated (and the autodiff) gradient lowers the validation meta-loss
    steps = {d["direction"]: d["change"] for d in report["descent_steps"]}
    assert steps["autodiff"] < 0 and steps["truncated"] < 0, steps
    assert any((out / "tb").iterdir())
    again = run_cli(*args, module="evolopt.diagnose")
    assert again.returncode == 2 and "already holds a diagnosis" in again.stderr


def test_validation_suites_share_no_task_with_the_heldout_suites():
    from evolopt.suites import get_suite

    def keys(name):
        return {(t.family, json.dumps(t.options, sort_keys=True), t.steps) for t in get_suite(name)}

    for name in ("validation", "validation2"):
        validation = keys(name)
        assert validation and not validation & (keys("heldout") | keys("heldout2")), name
    names = [t.name for s in ("validation", "validation2", "heldout", "heldout2") for t in get_suite(s)]
    assert len(set(names)) == len(names) - 1  # rl_cartpole_ppo is in both held-out suites, the same task


def test_aligned_cosine_recovers_the_true_cosine_that_noise_hides():
    # closed form: g_a = u, g_b = 0.6 u + 0.8 v (cosine 0.6), each estimated from 200 particles
    # with per-particle noise 80x the signal: the raw cosine is shrunk to ~0.43
    rng = np.random.default_rng(0)
    dim, n = 2000, 200
    u, v = np.eye(dim)[0], np.eye(dim)[1]
    parts_a = u + 0.2 * rng.standard_normal((n, dim))
    parts_b = 0.6 * u + 0.8 * v + 0.2 * rng.standard_normal((n, dim))
    a, b = ga.summarize({"pes": parts_a}, seed=0), ga.summarize({"pes": parts_b}, seed=1)
    raw = gp.cosine(a["pes.mean"], b["pes.mean"])
    aligned = ga.aligned_cosine(a["pes.mean"], float(a["pes.signal"]), b["pes.mean"], float(b["pes.signal"]))
    assert raw < 0.5 and abs(aligned - 0.6) < 0.06, (raw, aligned)
    assert ga.aligned_cosine(a["pes.mean"], 0.0, b["pes.mean"], 1.0) is None  # no signal: no estimate


def test_compare_finds_the_cosine_of_a_known_tilt_and_refuses_what_it_cannot_compare(tmp_path, unbiased, biased):
    # b's estimates carry a fixed bias orthogonal to the (same) true gradient and as long: its
    # ES mean is tilted by 45 degrees, its autodiff gradient is not
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    ga.write(a, unbiased["gradients"])
    b.mkdir()
    ga.write(b, biased["gradients"])
    rows = {r["estimator"]: r for r in ga.compare([a, b])}
    assert set(rows) == {"truncated", "pes", "autodiff"}
    assert abs(rows["truncated"]["cos_aligned"] - 2**-0.5) < 0.1, rows
    assert rows["autodiff"]["cos_aligned"] > 0.95, rows
    result = run_cli(f"compare={a},{b}", module="evolopt.diagnose")
    assert result.returncode == 0 and "| " + str(b) + " | truncated |" in result.stdout, result.stderr
    same = run_cli(f"compare={a},{a}", module="evolopt.diagnose")
    assert same.returncode == 2 and "the same seed=" in same.stderr and len(same.stderr.strip().splitlines()) == 1
    missing = run_cli(f"compare={a},{tmp_path / 'nope'}", module="evolopt.diagnose")
    assert missing.returncode == 2 and "has no gradients.npz" in missing.stderr

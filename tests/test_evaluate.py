"""evolopt.evaluate: the report's arithmetic, learning-rate tuning of the candidate against an
independent per-rate loop, the report's columns, sharding over 4 forced CPU devices, CLI errors."""

from __future__ import annotations

import csv
import json
import math

import jax
import numpy as np
import pytest
from conftest import run_cli

import evolopt
from evolopt.architectures.adam_hparams import init_theta as adam_hparams_theta
from evolopt.architectures.baselines import baseline
from evolopt.config import load_builtins
from evolopt.eval_report import Result, write_report
from evolopt.evaluate import evaluate_task, iqm, lr_grid, main, resolve_candidate, smooth, steps_to_reach
from evolopt.export import load_theta_file, save_theta_file
from evolopt.registry import ARCHITECTURES, TASK_FAMILIES
from evolopt.suites import SuiteTask
from evolopt.unroll import train_curve

load_builtins()  # the tests build task families directly, also when this file runs alone

DIGITS = SuiteTask("digits40", "image_mlp", {"datasets": ["digits"], "hidden": [32]}, 40, True)
QUADRATIC = SuiteTask("quadratic40", "quadratic", {"dim": 10}, 40, False)


def reference_runs(task, make_lopt, theta, lrs, seeds, keys=None):
    """Per rate and seed, one plain train_curve call with the rate fixed at build time; the final score of a
    rate is the mean over seeds of the mean raw loss over the last w = floor(0.05 T) steps, its mean score
    the mean over seeds of the mean raw loss over all T steps. Returns (final, valid, mean) per rate."""
    family = TASK_FAMILIES.build(task.family, **task.options)
    keys = jax.random.split(jax.random.key(1234), seeds) if keys is None else keys  # evaluate's documented seeds
    w = max(1, int(0.05 * task.steps))
    scores, valids, means = [], [], []
    for lr in lrs:
        runs = [train_curve(theta, k, family, make_lopt(lr), task.steps, loss_clip=1e30) for k in keys]
        scores.append(np.mean([np.mean(np.asarray(c)[-w:]) for c, _ in runs]) * family.loss_scale)
        valids.append(np.mean([float(v) for _, v in runs]) * family.loss_scale)
        means.append(np.mean([np.mean(np.asarray(c)) for c, _ in runs]) * family.loss_scale)
    return np.array(scores), np.array(valids), np.array(means)


def test_report_arithmetic_against_closed_forms():
    assert iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert steps_to_reach(np.array([5.0, 4.0, 3.0, 2.0]), 3.0) == 3.0
    assert math.isinf(steps_to_reach(np.array([5.0, 4.0]), 1.0))
    curve = np.arange(1.0, 101.0)[None]  # window 5: trailing mean of the last 5 values
    np.testing.assert_allclose(smooth(curve)[0, -1], np.mean(np.arange(96.0, 101.0)))
    np.testing.assert_allclose(smooth(curve)[0, 1], 1.5)


def test_an_arch_at_a_named_theta_is_a_candidate():
    from evolopt.architectures.celo2 import momentum_theta

    c = resolve_candidate("celo2:muon")
    assert c.lopt.name == "celo2" and c.own_lr == 1e-3
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, c.theta, momentum_theta())))


def test_lr_grid_is_log_spaced_from_1e_4_to_1():
    np.testing.assert_allclose(lr_grid(9), [10 ** (-4 + i / 2) for i in range(9)], rtol=1e-12)
    np.testing.assert_allclose(lr_grid(3), [1e-4, 1e-2, 1.0], rtol=1e-12)
    assert lr_grid(1).tolist() == [1e-3] and lr_grid(0).shape == (0,)
    with pytest.raises(ValueError, match="n >= 0"):
        lr_grid(-1)


def test_tuned_celo2_matches_an_independent_loop_over_rates():
    """The shipped optimizer's rate traced in one vmapped grid == its arch rebuilt at each fixed rate, run by run."""
    cand = resolve_candidate("celo2-cpu")
    _, header = load_theta_file(evolopt.export.resolve_path("celo2-cpu"))
    # Rates where training is stable: at lr 1 runs diverge, and diverging float32 runs amplify
    # the last-bit differences between a vmapped grid and single runs (scores 78 vs 65 seen).
    lrs = np.array([1e-4, 3e-3, 1e-2])

    own = header["arch_config"]["learning_rate"]

    def make(lr):
        return ARCHITECTURES.build(header["arch"], **{**header["arch_config"], "learning_rate": float(lr)})

    scores, valids, means = reference_runs(DIGITS, make, cand.theta, [*lrs, own], seeds=2)
    r = evaluate_task(DIGITS, cand, ["adam"], 2, lr_grid(1), lrs, score="final")
    best = int(np.argmin(scores[:3]))
    assert r.tuned and r.candidate_lr == pytest.approx(lrs[best]) and r.score == "final"
    np.testing.assert_allclose([row[1] for row in r.grid[cand.label]], scores[:3], rtol=2e-4)
    np.testing.assert_allclose([row[2] for row in r.grid[cand.label]], means[:3], rtol=2e-4)
    np.testing.assert_allclose([row[3] for row in r.grid[cand.label]], valids[:3], rtol=2e-4)
    assert r.candidate_mean == pytest.approx(means[best], rel=2e-4)
    assert r.candidate_train == pytest.approx(scores[best], rel=2e-4)
    assert r.candidate_valid == pytest.approx(valids[best], rel=2e-4)
    # The own rate (the file's) is not on this grid: trained separately, at that rate.
    assert own not in lrs and r.own_lr == pytest.approx(own) and r.own_train == pytest.approx(scores[3], rel=2e-4)
    assert r.own_normalized_loss == pytest.approx(scores[3] / r.baseline_train, rel=2e-4)
    assert set(r.curves) == {
        "celo2-cpu (lr=1e-02, tuned)" if best == 1 else f"celo2-cpu (lr={lrs[best]:.0e}, tuned)",
        f"celo2-cpu (own lr={own:.0e})",
        "adam (lr=1e-03)",
    }


def test_tuned_adam_candidate_and_baseline_match_an_independent_search(tmp_path):
    """Candidate 'adam' tuned over 3 rates and baseline sgdm, by mean train loss (the default): both pick the
    reference's best rate and its three scores."""
    lrs = lr_grid(3)
    _, adam_valid, adam_means = reference_runs(QUADRATIC, lambda lr: baseline("adam", float(lr)), {}, lrs, seeds=2)
    sgdm_final, _, sgdm_means = reference_runs(QUADRATIC, lambda lr: baseline("sgdm", float(lr)), {}, lrs, seeds=2)
    r = evaluate_task(QUADRATIC, resolve_candidate("adam"), ["sgdm"], 2, lrs, lrs)
    a, b = np.argmin(adam_means), np.argmin(sgdm_means)
    assert r.score == "mean" and r.candidate_lr == lrs[a] and r.baseline_lr == lrs[b]
    assert r.candidate_mean == pytest.approx(adam_means[a], rel=1e-5)
    assert r.candidate_valid == pytest.approx(adam_valid[a], rel=1e-5)
    assert r.baseline_mean == pytest.approx(sgdm_means[b], rel=1e-5)
    assert r.baseline_train == pytest.approx(sgdm_final[b], rel=1e-5)
    assert r.normalized_loss == pytest.approx(adam_means[a] / sgdm_means[b], rel=3e-5)
    assert r.baselines["sgdm"]["lr"] == lrs[b] and r.baselines["sgdm"]["mean"] == pytest.approx(sgdm_means[b])
    assert r.own_lr == 1e-3  # a baseline name's own rate, not on this grid


def test_first_seed_draws_the_later_seeds_of_a_longer_draw():
    """first_seed=2 seeds=2 are seeds 2 and 3 of a 4-seed evaluation (the documented keys), tuned on their own
    mean; a first_seed that were ignored would give the default draw's numbers."""
    lrs = lr_grid(3)
    later = jax.random.split(jax.random.key(1234), 4)[2:]
    final, valid, means = reference_runs(QUADRATIC, lambda lr: baseline("adam", float(lr)), {}, lrs, 2, later)
    default = evaluate_task(QUADRATIC, resolve_candidate("adam"), ["sgdm"], 2, lrs, lrs)
    r = evaluate_task(QUADRATIC, resolve_candidate("adam"), ["sgdm"], 2, lrs, lrs, first_seed=2)
    a = np.argmin(means)
    assert r.candidate_lr == lrs[a] and r.candidate_mean == pytest.approx(means[a], rel=1e-5)
    assert r.candidate_train == pytest.approx(final[a], rel=1e-4)  # a loss near 0: vmap vs loop rounding
    assert r.candidate_valid == pytest.approx(valid[a], rel=1e-5)
    assert abs(default.candidate_mean / r.candidate_mean - 1) > 1e-3  # another draw, not the default's


def test_adam_hparams_file_at_its_own_rate_is_adam(tmp_path):
    """adam_hparams theta exported at lr 3e-2, candidate_lrs=0: the reference Adam at 3e-2."""
    path = save_theta_file(
        tmp_path / "a.npz", adam_hparams_theta(None, 3e-2), "adam_hparams", {"init_learning_rate": 3e-2}
    )
    ref, _, _ = reference_runs(QUADRATIC, lambda lr: baseline("adam", float(lr)), {}, [3e-2], seeds=2)
    r = evaluate_task(QUADRATIC, resolve_candidate(str(path)), ["adam"], 2, lr_grid(1), lr_grid(0))
    assert not r.tuned and math.isnan(r.candidate_lr) and math.isnan(r.own_lr)
    assert r.candidate_train == pytest.approx(ref[0], rel=1e-4) and r.own_train == r.candidate_train


BASELINES = {  # at their tuned rates (by mean train loss): adam is the best baseline on it
    "adam": {"lr": 1e-2, "final": 1.0, "mean": 2.0, "valid": 0.4},
    "muon": {"lr": 1e-1, "final": 0.5, "mean": 4.0, "valid": 0.8},
}


def fake(task, final, mean, valid, lr=1e-2, own=(3.0, 6.0, 1.0)):
    """A task whose candidate scores (final, mean, valid) at ``lr`` and ``own`` at its own rate 1e-3."""
    grid = {"cand": [(1e-3, *own), (lr, final, mean, valid)]}
    grid.update({n: [(b["lr"], b["final"], b["mean"], b["valid"])] for n, b in BASELINES.items()})
    return Result(
        task=task,
        in_distribution=True,
        candidate_lr=lr,
        candidate_train=final,
        candidate_valid=valid,
        baseline="adam",
        baseline_lr=1e-2,
        baseline_train=1.0,
        baseline_valid=0.4,
        normalized_loss=mean / 2.0,
        speedup=0.5,
        own_lr=1e-3,
        own_train=own[0],
        own_valid=own[2],
        own_normalized_loss=own[1] / 2.0,
        own_speedup=math.inf,
        seconds=2.0,
        tuned=True,
        curves={"cand": np.ones((1, 20))},
        grid=grid,
        score="mean",
        candidate_mean=mean,
        baseline_mean=2.0,
        own_mean=own[1],
        baselines=BASELINES,
    )


def test_report_compares_each_baseline_and_the_best_of_them_on_three_scores(tmp_path):
    """Hand-computed ratios. a: mean 1 (vs adam 0.5, muon 0.25, best-of 0.5), final 0.5 (0.5, 1, 1),
    valid 0.6 (1.5, 0.75, 1.5); b: mean 8 (4, 2, 4), final 2 (2, 4, 4), valid 0.2 (0.5, 0.25, 0.5)."""
    results = [fake("a", 0.5, 1.0, 0.6), fake("b", 2.0, 8.0, 0.2, lr=3e-2)]
    text = write_report(results, tmp_path, "cand", "s", "protocol line")
    # geo-means: adam mean sqrt(0.5 * 4), final sqrt(0.5 * 2), valid sqrt(1.5 * 0.5); wins count ratios < 1
    assert "| adam | 1/2 | 1.414 | 1/2 | 1.000 | 1/2 | 0.866 |" in text
    assert "| muon | 1/2 | 0.707 | 0/2 | 2.000 | 2/2 | 0.433 |" in text
    assert "| best-of | 1/2 | 1.414 | 0/2 | 2.000 | 1/2 | 0.866 |" in text
    # a wins on mean train loss against adam and the best-of but loses on validation loss to both (not to muon)
    assert "| 0.500 | 1.500 | 0.50 | adam, best-of |" in text and "| 4.000 | 0.500 | 0.50 | - |" in text
    assert "loses on validation loss against the best baseline: 1/2 (a)." in text
    assert "at the tuned learning rate, on mean train loss: 1/2; within 10% (1..1.1): 0 more; IQM" in text
    assert "at its own learning rate (1e-03): 0/2" in text and "Chosen learning rates: 1e-02 x1, 3e-02 x1." in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["format"] == 3 and data["score"] == "mean"
    assert [t["wins_train_loses_valid"] for t in data["tasks"]] == [["adam", "best-of"], []]
    assert data["tasks"][0]["candidate_mean"] == 1.0 and data["tasks"][0]["baselines"]["muon"]["valid"] == 0.8
    muon = data["comparisons"]["muon"]
    assert muon["mean"]["ratios"] == [0.25, 2.0] and muon["valid"]["wins"] == 2
    assert muon["final"]["geo_mean"] == pytest.approx(2.0)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {"score", "candidate_mean", "baseline_mean", "own_mean", "candidate_valid"} <= set(rows[0])
    grid = list(csv.DictReader(open(tmp_path / "lr_grid.csv")))
    assert len(grid) == 8 and grid[1] == {
        "task": "a",
        "optimizer": "cand",
        "lr": "0.01",
        "final_train": "0.5",
        "mean_train": "1.0",
        "final_valid": "0.6",
    }
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert events.Scalars("summary/muon/valid/geo_mean")[0].value == pytest.approx(math.sqrt(0.75 * 0.25))
    assert events.Scalars("a/ratio/best-of/mean")[0].value == pytest.approx(0.5)
    assert (tmp_path / "curves.png").is_file()


def test_mean_and_final_scores_pick_different_rates_when_curves_cross(monkeypatch):
    """Rate 0.1 drops fast and stalls at 0.5; rate 0.01 starts slow and ends at 0.2. Mean over the run:
    (1 + 0.5 * 9) / 10 = 0.55 vs (1 * 5 + 0.2 * 5) / 10 = 0.6, so mean picks 0.1; final picks 0.01."""
    fast, slow = [1.0] + [0.5] * 9, [1.0] * 5 + [0.2] * 5
    curves = np.array([[slow], [fast]])  # [L=2, S=1, T=10], rates (0.01, 0.1)
    valid = np.array([[0.3], [0.7]])
    monkeypatch.setattr(evolopt.eval_grid, "train_grid", lambda *a, **k: (curves, valid))
    lrs = np.array([0.01, 0.1])
    by_mean, _, _ = evolopt.eval_grid.tune(None, None, {}, 10, lrs, 1, score="mean")
    by_final, _, _ = evolopt.eval_grid.tune(None, None, {}, 10, lrs, 1, score="final")
    assert by_mean.lr == 0.1 and by_final.lr == 0.01
    assert by_mean.scores() == pytest.approx({"final": 0.5, "mean": 0.55, "valid": 0.7})
    assert by_final.scores() == pytest.approx({"final": 0.2, "mean": 0.6, "valid": 0.3})
    with pytest.raises(ValueError, match="unknown score 'median'; valid choices: final, mean"):
        evolopt.eval_grid.tune(None, None, {}, 10, lrs, 1, score="median")
    diverged = np.array([[[1.0, np.nan, 0.1]], [[1.0, 0.9, 0.8]]])
    assert np.isinf(evolopt.eval_grid.mean_scores(diverged)[0]) and np.isfinite(
        evolopt.eval_grid.mean_scores(diverged)[1]
    )


def test_tiny_evaluation_of_the_shipped_optimizer(tmp_path):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "optimizer=celo2-cpu",
                "suite=tiny",
                "seeds=2",
                "lrs=3",
                "candidate_lrs=0",
                "baselines=adam,sgdm",
                f"out={out}",
            ]
        )
        == 0
    )
    for name in ("results.md", "results.json", "results.csv", "lr_grid.csv", "curves.png"):
        assert (out / name).is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["task"] for r in rows] == ["quadratic_d10", "digits_mlp32_8x8"]
    own = load_theta_file(evolopt.export.resolve_path("celo2-cpu"))[1]["arch_config"]["learning_rate"]
    for r in rows:
        assert r["baseline"] in ("adam", "sgdm") and float(r["baseline_lr"]) in (1e-4, 1e-2, 1.0)
        assert float(r["candidate_lr"]) == float(r["own_lr"]) == own and r["tuned"] == "False"
        ratio = float(r["candidate_mean"]) / float(r["baseline_mean"])  # the default score: mean train loss
        assert r["score"] == "mean" and float(r["normalized_loss"]) == pytest.approx(ratio, rel=1e-6)
    text = (out / "results.md").read_text()
    assert "Win rate" in text and "at own lr" not in text


@pytest.mark.parametrize("name", ["adam", "muon"])
def test_a_baseline_against_itself_is_even(tmp_path, name):
    """Candidate 'adam' is tuned on the same grid and seeds as baseline 'adam': normalised loss 1."""
    out = tmp_path / "self"
    args = [
        f"optimizer={name}",
        "suite=tiny",
        "tasks=digits_mlp32_8x8",
        "seeds=1",
        "lrs=3",
        f"baselines={name}",
        f"out={out}",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["task"] for r in rows] == ["digits_mlp32_8x8"]  # tasks= picks a subset
    for r in rows:
        assert float(r["normalized_loss"]) == pytest.approx(1.0) and r["candidate_lr"] == r["baseline_lr"]
        assert float(r["speedup"]) <= 1.0


def test_four_devices_give_one_devices_numbers(tmp_path):
    """3 seeds x 3 rates = 9 runs, padded to 12 over 4 forced CPU devices: the same numbers as 1 device."""
    args = ["optimizer=celo2-cpu", "suite=tiny", "seeds=3", "lrs=3", "baselines=adam"]
    tables = {}
    for n in (1, 4):
        r = run_cli(
            *args,
            f"out={tmp_path / str(n)}",
            module="evolopt.evaluate",
            env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"},
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"sharded over {n} cpu device(s)" in r.stdout
        tables[n] = [list(csv.DictReader(open(tmp_path / str(n) / f))) for f in ("results.csv", "lr_grid.csv")]
    for one, four in zip(tables[1], tables[4]):
        assert len(one) == len(four) > 0
        for a, b in zip(one, four):
            # above the untrained model's ln(10) ~ 2.3: diverged, so chaotic (float reassociation across device
            # counts grows without bound); such a run needs only to diverge on both
            if float(a.get("final_train", 0)) > 2.5:
                assert float(b["final_train"]) > 2.5
                continue
            for k in a:
                if k == "seconds":
                    continue
                try:
                    np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=1e-5, atol=1e-7, err_msg=k)
                except ValueError:
                    assert a[k] == b[k]


@pytest.mark.parametrize(
    "args, words",
    [
        (["optimizer=no_such_thing"], ["celo2-cpu", "adam"]),
        (["optimizer=adam", "candidate_lrs=-1"], ["candidate_lrs=-1", ">= 0"]),
        (["optimizer=adam", "candidate_lrs=x"], ["candidate_lrs=x", "integer"]),
        (["optimizer=adam", "lrs=0"], ["lrs=0", ">= 1"]),
        (["optimizer=adam", "first_seed=-1"], ["first_seed=-1", ">= 0"]),
        (["optimizer=adam", "baselines=adam,rmsprop"], ["rmsprop", "sgdm"]),
        (["optimizer=adam", "tasks=quadratic_d10,nope"], ["'nope'", "quadratic_d10, digits_mlp32_8x8"]),
        (["optimizer=celo2:nope"], ["no named theta 'nope'", "muon"]),
    ],
)
def test_bad_arguments_are_one_line(capsys, args, words):
    assert main([*args, "suite=tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_tuning_an_arch_without_a_learning_rate_is_one_line(tmp_path, capsys):
    path = save_theta_file(tmp_path / "a.npz", adam_hparams_theta(None), "adam_hparams", {})
    assert main([f"optimizer={path}", "suite=tiny", "candidate_lrs=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adam_hparams" in err[0] and "candidate_lrs=0" in err[0]


def test_pretrained_celo2_cpu_ships_with_the_package():
    import optax

    opt = evolopt.load_optimizer("celo2-cpu", learning_rate=1e-3)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    assert "celo2-cpu" in evolopt.export.pretrained_names()

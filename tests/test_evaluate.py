"""evolopt.evaluate: the report's arithmetic, and a tiny end-to-end run of the shipped optimizer."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import evolopt
from evolopt.evaluate import iqm, main, smooth, steps_to_reach


def test_report_arithmetic_against_closed_forms():
    assert iqm([1, 2, 3, 4, 100, -50, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    assert steps_to_reach(np.array([5.0, 4.0, 3.0, 2.0]), 3.0) == 3.0
    assert math.isinf(steps_to_reach(np.array([5.0, 4.0]), 1.0))
    curve = np.arange(1.0, 101.0)[None]  # window 5: trailing mean of the last 5 values
    np.testing.assert_allclose(smooth(curve)[0, -1], np.mean(np.arange(96.0, 101.0)))
    np.testing.assert_allclose(smooth(curve)[0, 1], 1.5)


def test_pretrained_celo2_cpu_ships_with_the_package():
    import optax

    opt = evolopt.load_optimizer("celo2-cpu", learning_rate=1e-3)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    assert "celo2-cpu" in evolopt.export.pretrained_names()


def test_tiny_evaluation_of_the_shipped_optimizer(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["optimizer=celo2-cpu", "suite=tiny", "seeds=2", "lrs=3", "baselines=adam,sgdm", f"out={out}"]) == 0
    for name in ("results.md", "results.csv", "curves.png"):
        assert (out / name).is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["task"] for r in rows] == ["quadratic_d10", "digits_mlp32_8x8"]
    for r in rows:
        assert r["baseline"] in ("adam", "sgdm") and float(r["baseline_lr"]) in (1e-4, 1e-2, 1.0)
        ratio = float(r["candidate_train"]) / float(r["baseline_train"])
        assert float(r["normalized_loss"]) == pytest.approx(ratio, rel=1e-6)
    assert "Win rate" in (out / "results.md").read_text()


def test_a_baseline_against_itself_is_even(tmp_path):
    """Candidate 'adam' is tuned on the same grid and seeds as baseline 'adam': normalised loss 1."""
    out = tmp_path / "self"
    assert main(["optimizer=adam", "suite=tiny", "seeds=1", "lrs=3", "baselines=adam", f"out={out}"]) == 0
    for r in csv.DictReader(open(out / "results.csv")):
        assert float(r["normalized_loss"]) == pytest.approx(1.0)
        assert float(r["speedup"]) <= 1.0


def test_bad_optimizer_is_one_line(capsys):
    assert main(["optimizer=no_such_thing", "suite=tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "celo2-cpu" in err[0] and "adam" in err[0]

"""evolopt-evaluate as a user meets it: --help, the estimate, per-task results that survive an
interruption, and writes that stay under out=."""

from __future__ import annotations

import csv

import pytest

import evolopt.eval_task
from evolopt.eval_cli import estimate_seconds
from evolopt.evaluate import main
from evolopt.suites import SUITES

QUICK = ["suite=tiny", "seeds=1", "lrs=2", "baselines=adam"]


def test_help_lists_suites_with_task_counts_times_defaults_and_outputs(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    # tiny's 39 s were measured at 108 runs; the defaults are 3 * (4 * 9 + 9) = 135 runs: 48.75 s
    assert "tiny       2 tasks, ~49 s: quadratic_d10, digits_mlp32_8x8" in text
    for name, suite in SUITES.items():
        assert f"  {name:<10} {len(suite)} tasks, ~" in text
    assert "seeds: 3" in text and "baselines: [adam, adamw, sgdm, muon]" in text and "score: mean" in text
    assert "mean train loss over the" in text and "validation (test) loss" in text
    assert "results.md" in text and "results.json" in text and "tasks/<task>.npz" in text


def test_estimate_scales_with_the_number_of_runs():
    tiny = SUITES["tiny"]
    full = estimate_seconds(tiny, 3, 3, 9, 9)  # 3 * (27 + 9) = 108 runs: the measured default
    assert full == pytest.approx(39)
    assert estimate_seconds(tiny, 1, 1, 2, 0) == pytest.approx(39 * 3 / 108)  # 1 * (2 + 1) runs


def test_interrupted_evaluation_keeps_finished_tasks_and_the_same_command_continues(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    args = ["optimizer=adam", *QUICK, "score=final", f"out={out}"]
    real, calls = evolopt.eval_task.evaluate_task, []

    def dies_on_second(task, *a, **k):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task, *a, **k)

    monkeypatch.setattr(evolopt.eval_task, "evaluate_task", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert "estimate ~" in capsys.readouterr().err  # said before starting
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["quadratic_d10.npz"]
    assert not (out / "results.md").exists()

    calls.clear()
    monkeypatch.setattr(
        evolopt.eval_task, "evaluate_task", lambda task, *a, **k: calls.append(task.name) or real(task, *a, **k)
    )
    assert main(args) == 0
    assert calls == ["digits_mlp32_8x8"]  # the finished task is not run again
    assert "1 already done there (kept)" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["task"] for r in rows] == ["quadratic_d10", "digits_mlp32_8x8"]
    assert [r["score"] for r in rows] == ["final", "final"]  # the kept task was measured under score=final too
    assert float(rows[0]["normalized_loss"]) == pytest.approx(1.0)  # adam vs adam on the same grid and seeds

    # another protocol on the same out= is refused in one line, nothing changes: another score (it picks
    # every rate; the default is mean) or other baselines
    before = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    for other, words in (
        (QUICK, "holds an evaluation with score=final, not mean"),
        ([*QUICK[:-1], "baselines=sgdm", "score=final"], "holds an evaluation with baselines=['adam']"),
    ):
        assert main(["optimizer=adam", *other, f"out={out}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_a_bad_score_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["optimizer=adam", *QUICK, "score=median", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown score 'median'; valid choices: final, mean" in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_another_draw_of_seeds_in_out_is_refused_and_left_as_it_was(tmp_path, capsys):
    """An out= holding the first_seed=1 draw is continued only by first_seed=1; the default draw is refused
    in one line naming both values, and the stored task is not touched."""
    out = tmp_path / "ev"
    assert main(["optimizer=adam", *QUICK, "first_seed=1", f"out={out}"]) == 0
    before = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["optimizer=adam", *QUICK, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an evaluation with first_seed=1, not 0" in err[0], err
    assert {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert "evaluation seeds 1..1" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("stored", "words"),
    [
        ({}, "older evolopt (format 1, without mean-train scores)"),
        ({"format": 2, "score": "mean"}, "older evolopt (format 2, its test losses on one validation batch)"),
    ],
)
def test_an_evaluation_stored_by_an_older_format_is_refused(tmp_path, capsys, stored, words):
    """Format 1 (no format, no score: final-loss tuning, no mean-train scores) and format 2 (test loss on one
    validation batch) are not continued: their numbers are not this evolopt's."""
    import json

    import numpy as np

    (tmp_path / "ev" / "tasks").mkdir(parents=True)
    old = {
        "protocol": {
            **stored,
            "optimizer": "adam",
            "suite": "tiny",
            "seeds": 1,
            "lrs": 2,
            "candidate_lrs": 2,
            "baselines": ["adam"],
        }
    }
    np.savez(
        tmp_path / "ev" / "tasks" / "quadratic_d10.npz", __result__=np.frombuffer(json.dumps(old).encode(), np.uint8)
    )
    assert main(["optimizer=adam", *QUICK, f"out={tmp_path / 'ev'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_evaluating_a_run_by_absolute_path_writes_only_under_out(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    beside = sorted(p.name for p in tiny_run.parent.iterdir())
    out = tmp_path / "ev"
    assert main([f"optimizer={tiny_run.resolve()}", *QUICK, "tasks=[quadratic_d10]", f"out={out}"]) == 0
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == beside  # no '<run> (lr=...)' folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]
    tb = list((out / "tb").iterdir())
    assert tb and all(p.is_file() for p in tb)  # one TensorBoard run: curves are tags, not runs

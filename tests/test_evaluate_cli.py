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
    assert "tiny     2 tasks, ~39 s: quadratic_d10, digits_mlp32_8x8" in text
    assert f"heldout  {len(SUITES['heldout'])} tasks, ~" in text
    assert "seeds: 3" in text and "baselines: [adam, adamw, sgdm]" in text
    assert "results.md" in text and "tasks/<task>.npz" in text


def test_estimate_scales_with_the_number_of_runs():
    tiny = SUITES["tiny"]
    full = estimate_seconds(tiny, 3, 3, 9, 9)  # 3 * (27 + 9) = 108 runs: the measured default
    assert full == pytest.approx(39)
    assert estimate_seconds(tiny, 1, 1, 2, 0) == pytest.approx(39 * 3 / 108)  # 1 * (2 + 1) runs


def test_interrupted_evaluation_keeps_finished_tasks_and_the_same_command_continues(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    args = ["optimizer=adam", *QUICK, f"out={out}"]
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
    assert float(rows[0]["normalized_loss"]) == pytest.approx(1.0)  # adam vs adam on the same grid and seeds

    # another protocol on the same out= is refused in one line, nothing changes
    before = (out / "results.csv").read_text()
    assert main(["optimizer=adam", *QUICK[:-1], "baselines=sgdm", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an evaluation with baselines=['adam']" in err[0]
    assert (out / "results.csv").read_text() == before


def test_evaluating_a_run_by_absolute_path_writes_only_under_out(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    beside = sorted(p.name for p in tiny_run.parent.iterdir())
    out = tmp_path / "ev"
    assert main([f"optimizer={tiny_run.resolve()}", *QUICK, "tasks=[quadratic_d10]", f"out={out}"]) == 0
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == beside  # no '<run> (lr=...)' folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]
    tb = list((out / "tb").iterdir())
    assert tb and all(p.is_file() for p in tb)  # one TensorBoard run: curves are tags, not runs

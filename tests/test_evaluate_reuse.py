"""evolopt-evaluate baselines_from=DIR: the baselines read from an earlier evaluation are the ones a fresh
evaluation trains, bit for bit; any other protocol is refused in one line before anything is written."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

import evolopt.eval_task
from evolopt.eval_store import HEADER, load_result, task_path
from evolopt.evaluate import main

TASK = "quadratic_d10"  # tiny suite: 30 steps
COMMON = ["suite=tiny", f"tasks=[{TASK}]", "seeds=2", "lrs=2"]


def evaluate(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """X: candidate adamw, fresh; Y: candidate sgd with X's baselines; Z: candidate sgd, fresh. Y and Z list
    the baselines in another order than X (they are looked up by name)."""
    root = tmp_path_factory.mktemp("reuse")
    x, y, z = root / "X", root / "Y", root / "Z"
    runs = {
        "X": evaluate("optimizer=adamw", *COMMON, "baselines=[adam,sgdm]", f"out={x}"),
        "Y": evaluate("optimizer=sgd", *COMMON, "baselines=[sgdm,adam]", f"baselines_from={x}", f"out={y}"),
        "Z": evaluate("optimizer=sgd", *COMMON, "baselines=[sgdm,adam]", f"out={z}"),
    }
    for name, (code, err) in runs.items():
        assert code == 0, (name, err[-2000:])
    return {"root": root, "X": x, "Y": y, "Z": z, "err": {k: v[1] for k, v in runs.items()}}


def without_seconds(report: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["tasks"]]


def test_reused_baselines_equal_a_fresh_evaluation_exactly(evals):
    y, z = (json.loads((evals[k] / "results.json").read_text()) for k in ("Y", "Z"))
    assert without_seconds(y) == without_seconds(z)  # every score, rate, baseline table and normalised loss
    assert y["comparisons"] == z["comparisons"]
    assert (evals["Y"] / "lr_grid.csv").read_bytes() == (evals["Z"] / "lr_grid.csv").read_bytes()
    stored = {k: load_result(evals[k], TASK, _protocol(evals[k])) for k in ("Y", "Z")}
    assert stored["Y"].curves.keys() == stored["Z"].curves.keys()
    for name, curves in stored["Z"].curves.items():  # the baselines' [seeds, steps] curves too
        assert np.array_equal(stored["Y"].curves[name], curves), name
    # the baselines were read, not trained: a trained grid logs its time; X's adam table is Y's
    assert f"  {TASK} adam:" in evals["err"]["Z"] and f"  {TASK} adam:" not in evals["err"]["Y"]
    assert f"  {TASK} sgd:" in evals["err"]["Y"]  # the candidate is trained
    x = json.loads((evals["X"] / "results.json").read_text())
    assert x["tasks"][0]["baselines"]["adam"] == y["tasks"][0]["baselines"]["adam"]


def test_the_report_says_which_baselines_were_reused_and_from_where(evals):
    line = f"Baselines (sgdm, adam) reused from {evals['X']} (read from its tasks/"
    assert line in (evals["Y"] / "results.md").read_text()
    assert "reused from" not in (evals["Z"] / "results.md").read_text()


def _protocol(out):
    with np.load(task_path(out, TASK), allow_pickle=False) as data:
        return json.loads(data[HEADER].tobytes().decode())["protocol"]


def rewrite_protocol(path, change) -> None:
    """Rewrite a stored task's protocol in place with ``change(protocol)`` (the arrays kept)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays[HEADER].tobytes().decode())
    change(header["protocol"])
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)


def copy_with(src, dst, change=None):
    shutil.copytree(src / "tasks", dst / "tasks")
    if change is not None:
        rewrite_protocol(task_path(dst, TASK), change)
    return dst


def test_another_protocol_a_missing_task_or_baseline_or_a_bad_file_is_refused_and_nothing_is_written(evals):
    root, x = evals["root"], evals["X"]
    steps = copy_with(x, root / "steps31", lambda p: p["task"].update(steps=31))
    junk = root / "junk"
    (junk / "tasks").mkdir(parents=True)
    task_path(junk, TASK).write_bytes(b"not an npz")
    base = ["optimizer=sgd", "suite=tiny", f"tasks=[{TASK}]", "seeds=2", "lrs=2", "baselines=[adam]"]
    cases = [
        ([*base, "seeds=1"], x, f"task '{TASK}' was evaluated there under another protocol: seeds=2 there, seeds=1"),
        ([*base, "lrs=3"], x, "lrs=2 there, lrs=3 here; use lrs=2 or drop baselines_from="),
        ([*base, "score=final"], x, "score=mean there, score=final here"),
        ([*base, "first_seed=2"], x, "first_seed=0 there, first_seed=2 here; use first_seed=0 or drop baselines_from="),
        ([*base, "baselines=[adam,muon]"], x, "has no baseline 'muon' there (there: adam, sgdm)"),
        ([*base, "tasks=null"], x, "task 'digits_mlp32_8x8' is not stored there"),
        (base, steps, "task.steps=31 there, task.steps=30 here"),
        (base, junk, "is not a readable stored task (not an .npz archive)"),
        (base, root / "nowhere", f"task '{TASK}' is not stored there"),
    ]
    for args, source, words in cases:
        out = root / "refused"
        code, err = evaluate(*args, f"baselines_from={source}", f"out={out}")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], (args, err)
        assert f"baselines_from={source}" in lines[0] and not out.exists()


def test_resuming_keeps_stored_tasks_with_or_without_baselines_from_but_not_another_task_definition(evals, monkeypatch):
    root, calls = evals["root"], []
    real = evolopt.eval_task.evaluate_task
    monkeypatch.setattr(
        evolopt.eval_task, "evaluate_task", lambda task, *a, **k: calls.append(task.name) or real(task, *a, **k)
    )
    args = ["optimizer=sgd", *COMMON, "baselines=[sgdm,adam]"]
    legacy = copy_with(evals["Y"], root / "legacy", lambda p: p.pop("task"))  # stored before task definitions
    for out, extra in ((copy_with(evals["Y"], root / "resumed"), [f"baselines_from={evals['X']}"]), (legacy, [])):
        assert evaluate(*args, *extra, f"out={out}")[0] == 0
        assert calls == []  # kept: baselines_from changes no number
        assert without_seconds(json.loads((out / "results.json").read_text())) == without_seconds(
            json.loads((evals["Z"] / "results.json").read_text())
        )
    other = copy_with(evals["Y"], root / "other", lambda p: p["task"]["options"].update(dim=11))
    assert evaluate(*args, f"baselines_from={evals['X']}", f"out={other}")[0] == 0
    assert calls == [TASK]  # measured again: the stored task was another task


def test_help_documents_the_key(capsys):
    assert main(["--help"]) == 0
    assert (
        "baselines_from: null     # an earlier evaluation's out dir: read its tuned baselines"
        in capsys.readouterr().out
    )


def test_a_source_stored_before_task_definitions_is_checked_against_its_suite(evals):
    """Stores without a task definition (the suite's name stood for it) are checked against that suite's
    definition of the task today: reused when it has the task, refused when it has not."""
    root, args = evals["root"], ["optimizer=sgd", *COMMON, "baselines=[sgdm,adam]"]
    legacy = copy_with(evals["X"], root / "legacy_source", lambda p: p.pop("task"))
    assert evaluate(*args, f"baselines_from={legacy}", f"out={root / 'from_legacy'}")[0] == 0
    assert without_seconds(json.loads((root / "from_legacy" / "results.json").read_text())) == without_seconds(
        json.loads((evals["Z"] / "results.json").read_text())
    )
    elsewhere = copy_with(evals["X"], root / "other_suite", lambda p: p.pop("task") and p.update(suite="heldout"))
    code, err = evaluate(*args, f"baselines_from={elsewhere}", f"out={root / 'refused'}")
    assert code == 2 and "task=unknown (not recorded; its suite has no such task) there" in err, err
    assert not (root / "refused").exists()


def test_stores_written_without_first_seed_are_the_default_draw(evals, monkeypatch):
    """Format-3 stores written before the protocol recorded ``first_seed`` (session 14's evaluations) hold the
    default draw: resumed and reused by ``first_seed=0`` exactly, refused by another draw in one line naming 0."""
    root, calls = evals["root"], []
    real = evolopt.eval_task.evaluate_task
    monkeypatch.setattr(
        evolopt.eval_task, "evaluate_task", lambda task, *a, **k: calls.append(task.name) or real(task, *a, **k)
    )
    args = ["optimizer=sgd", *COMMON, "baselines=[sgdm,adam]"]
    unrecorded = copy_with(evals["X"], root / "no_first_seed_source", lambda p: p.pop("first_seed"))
    assert "first_seed" not in _protocol(unrecorded)
    out = root / "from_no_first_seed"
    assert evaluate(*args, f"baselines_from={unrecorded}", f"out={out}")[0] == 0
    assert without_seconds(json.loads((out / "results.json").read_text())) == without_seconds(
        json.loads((evals["Z"] / "results.json").read_text())
    )
    resumed = copy_with(evals["Y"], root / "no_first_seed_out", lambda p: p.pop("first_seed"))
    calls.clear()
    assert evaluate(*args, f"out={resumed}")[0] == 0
    assert calls == []  # its stored task was kept, not measured again
    code, err = evaluate(*args, "first_seed=2", f"baselines_from={unrecorded}", f"out={root / 'refused'}")
    assert code == 2 and "first_seed=0 there, first_seed=2 here; use first_seed=0 or" in err, err
    code, err = evaluate(*args, "first_seed=2", f"out={resumed}")
    assert code == 2 and "holds an evaluation with first_seed=0, not 2" in err, err
    assert not (root / "refused").exists()

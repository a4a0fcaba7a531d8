"""What a run tells the person watching: start line, progress lines off a terminal, resume line,
summary; TensorBoard config text and evaluation curves as tags of one run; timestamped metrics;
a family the arch cannot learn on refused before anything is written."""

from __future__ import annotations

import json
import time

import jax
import pytest
from conftest import TINY, run_cli

from evolopt import cpu_devices
from evolopt.config import load_config
from evolopt.learnable import reaches_learned_rule
from evolopt.loop import build
from evolopt.progress import ProgressReporter
from evolopt.summary import summarize


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_lines_every_30_s_and_every_10_percent_with_rate_and_eta():
    clock, lines = Clock(), []
    rep = ProgressReporter(total=100, start=0, clock=clock, emit=lines.append)
    printed = []
    for gen in range(1, 101):
        clock.t = 100.0 + 2.0 * gen  # the first generation (compilation) ends at t=102, then 2 s each
        if rep.update(gen, {"fitness/mean": 0.5, "fitness/min": 0.25}):
            printed.append(gen)
    # the first generation (it ran), then every 10% (20 s here, so before 30 s are up), and the last
    assert printed == [1, *range(10, 101, 10)]
    line = lines[printed.index(50)]
    assert line.startswith("generation 50/100 (50%): fitness mean 0.5000 best 0.2500, 0.50 gen/s, ETA 100 s")


def test_progress_every_30_s_when_10_percent_takes_longer():
    clock, lines = Clock(), []
    rep = ProgressReporter(total=1000, start=0, clock=clock, emit=lines.append)
    printed = []
    for gen in range(1, 60):
        clock.t = 7.0 * gen
        if rep.update(gen, {}):
            printed.append(gen)
    assert printed[:4] == [1, 6, 11, 16]  # 35 s apart: due after 30 s, long before 10% (100 generations)


def test_quadratic_has_nothing_for_celo2_to_learn_but_small_fc_lopt_learns_it():
    for arch, expected in (("celo2", False), ("small_fc_lopt", True)):
        trainer, theta = build(load_config(["task_family=quadratic", f"arch={arch}", "population_size=4"]))
        assert reaches_learned_rule(trainer.lopt, trainer.family, theta, jax.random.key(0)) is expected


def test_unlearnable_family_is_refused_in_one_line_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("task_family=quadratic", "arch=celo2", "population_size=4", f"run_dir={run_dir}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be learned on by arch 'celo2'" in lines[0] and "route_1d_to_adam" in lines[0]
    assert not run_dir.exists()


def test_start_progress_resume_lines_summary_timestamps_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    before = time.time()
    first = run_cli(*TINY, "generations=2", "checkpoint_every=2", f"run_dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    err = first.stderr
    devices = cpu_devices.resolve("auto", [8], cpu_devices.usable_cores())  # TINY's population of 8, one per core
    assert err.index(f"(new run) on {devices} cpu device(s)") < err.index("compiling...") < err.index("generation 1/2")
    assert "generation 2/2 (100%)" in err
    # summary: what was compared, the files, the next commands
    out = first.stdout
    assert "Adam at lr 0.001 (one fixed rate, not tuned) on the same 2 validation tasks of quadratic" in out
    assert f"tensorboard --logdir {run_dir / 'tb'}" in out and f"evolopt-evaluate optimizer={run_dir}" in out
    assert out.strip() == summarize(run_dir).strip()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(before <= r["time"] <= time.time() for r in rows)

    again = run_cli(*TINY, "generations=3", "checkpoint_every=2", f"run_dir={run_dir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from its last checkpoint" in again.stderr
    assert "resumed at generation 2 of 3" in again.stderr

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tb"
    assert all(p.is_file() for p in tb.iterdir())  # one run: no folder per curve
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    curves = [t for t in tags["scalars"] if t.startswith("eval_curve/")]
    assert "eval_curve/gen_000000/learned" in curves and "eval_curve/gen_000000/adam" in curves
    assert len(acc.Scalars("eval_curve/gen_000000/adam")) == 10  # evaluation.steps points
    config_text = [t for t in tags["tensors"] if t.startswith("config")]
    assert config_text, tags["tensors"]


@pytest.mark.parametrize("gen", [0])
def test_summary_of_a_run_without_metrics_names_the_dir(tmp_path, gen):
    (tmp_path / "config.yaml").write_text(
        "evaluation: {adam_lr: 0.001, num_tasks: 2, steps: 10}\ntask_family: {name: quadratic}\n"
    )
    assert summarize(tmp_path).splitlines()[0] == f"run saved to {tmp_path}"

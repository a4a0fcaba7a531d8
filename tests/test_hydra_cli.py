"""The train CLI is a Hydra app: --cfg, -m sweeps with the basic and joblib launchers, no stray folders."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY


def cli(cwd, *args: str, module: str = "evolopt.train") -> subprocess.CompletedProcess:
    """The CLI run from ``cwd`` (a fresh folder), so anything it writes outside run_dir shows."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_cfg_job_prints_the_composed_config_and_writes_nothing(tmp_path):
    result = cli(tmp_path, "--cfg", "job", *TINY, "population_size=6", "hydra.run.dir=runs/x")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["population_size"] == 6 and cfg["task_family"]["name"] == "quadratic"
    assert cfg["run_dir"] == "runs/x"  # hydra.run.dir is honoured: it is the run dir
    assert list(tmp_path.iterdir()) == []


def test_conflicting_hydra_run_dir_is_one_line(tmp_path):
    result = cli(tmp_path, *TINY, "hydra.run.dir=a", "run_dir=b")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evolopt.train: error: hydra.run.dir=a conflicts with run_dir=b; evolopt writes a run under run_dir: "
        "give one of them"
    ]
    assert list(tmp_path.iterdir()) == []


def test_bad_value_in_a_sweep_is_one_line_before_any_job(tmp_path):
    result = cli(tmp_path, "-m", *TINY, "strategy=open_es,nope", "generations=1", "run_dir=sweep")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown strategy 'nope'; valid choices: " in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_lists_plugin_families_and_unknown_family_hints_plugins(tmp_path):
    result = cli(REPO, "--help", "plugins=[tests.plugin_example.my_tasks]")
    assert result.returncode == 0 and "my_linear_regression" in result.stdout
    assert "my_linear_regression" not in cli(REPO, "--help").stdout
    result = cli(tmp_path, "task_family=my_linear_regression")
    assert result.returncode == 2 and "need plugins=[" in result.stderr


def _job(run: os.PathLike) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.slow
def test_sweep_basic_launcher_two_jobs_and_joblib_one_job(tmp_path):
    tiny = [*TINY, "generations=1", "checkpoint_every=1"]
    result = cli(tmp_path, "-m", *tiny, "seed=3,4", "run_dir=sweep")
    assert result.returncode == 0, result.stderr[-3000:]
    # one run dir per job under run_dir; the job's own config says which job it is
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0", "1", "multirun.yaml"]
    assert [_job(tmp_path / "sweep" / n)["seed"] for n in ("0", "1")] == [3, 4]
    for n in ("0", "1"):
        assert _job(tmp_path / "sweep" / n)["run_dir"] == f"sweep/{n}"
        assert (tmp_path / "sweep" / n / "theta.npz").is_file()
        assert (tmp_path / "sweep" / n / "metrics.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no outputs/, multirun/, .hydra/, logs
    # the seed sweep's chains average into one file: the elementwise mean of its jobs' theta files
    result = cli(tmp_path, "average=sweep", "out=mean.npz", module="evolopt.export_cli")
    assert result.returncode == 0, result.stderr[-3000:]
    mean, jobs = (np.load(tmp_path / "mean.npz"), [np.load(tmp_path / "sweep" / n / "theta.npz") for n in "01"])
    leaves = [k for k in mean.files if not k.startswith("__")]
    assert leaves and sorted(leaves) == sorted(k for k in jobs[0].files if not k.startswith("__"))
    for k in leaves:
        np.testing.assert_allclose(mean[k], (jobs[0][k].astype(np.float64) + jobs[1][k]) / 2, rtol=1e-6)
    assert not np.allclose(jobs[0][leaves[0]], jobs[1][leaves[0]])  # two seeds moved differently

    result = cli(tmp_path, "-m", *tiny, "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "seed=5", "run_dir=jl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _job(tmp_path / "jl" / "0")["seed"] == 5 and (tmp_path / "jl" / "0" / "theta.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jl", "mean.npz", "sweep"]


def test_export_and_evaluate_use_the_same_machinery(tmp_path):
    for module, bad in (("evolopt.export_cli", "foo=1"), ("evolopt.evaluate", "foo=1")):
        result = cli(tmp_path, bad, "optimizer=adam" if module == "evolopt.evaluate" else "run_dir=x", module=module)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Could not override 'foo'" in lines[0], result.stderr
    result = cli(tmp_path, "--cfg", "job", "run_dir=runs/x", "generation=3", module="evolopt.export_cli")
    assert result.returncode == 0 and yaml.safe_load(result.stdout)["generation"] == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, fix",
    [
        (["--arch", "celo2"], "'--arch celo2': evolopt.train takes Hydra overrides, key=value: arch=celo2"),
        (["generations=2", "--arch=celo"], "'--arch=celo': evolopt.train takes Hydra overrides, key=value: arch=celo"),
        (["--population-size", "8"], "population_size=8"),
        (
            ["arch", "celo2", "generations=2"],
            "'arch celo2': evolopt.train takes Hydra overrides, key=value: arch=celo2",
        ),
        (["-m", "--seed"], "'--seed': evolopt.train takes Hydra overrides, key=value: seed=..."),
    ],
)
def test_argparse_habits_name_the_override_meant(argv, fix):
    from evolopt.cli import refuse_argparse_habits
    from evolopt.registry import ConfigError

    with pytest.raises(ConfigError) as e:
        refuse_argparse_habits(argv, "evolopt.train")
    assert fix in str(e.value)


def test_hydra_flags_and_overrides_are_not_habits():
    from evolopt.cli import refuse_argparse_habits

    for argv in (
        ["--cfg", "job", "arch=celo2"],
        ["-cn", "train", "-m", "strategy=pes,open_es"],
        ["--info", "config"],
        ["--help"],
        ["~seed", "+extra=1", "seed=-1"],
        ["--shell-completion", "install=bash"],
    ):
        refuse_argparse_habits(argv, "evolopt.train")  # raises nothing


def test_argparse_habit_is_one_line_and_creates_nothing(tmp_path):
    result = cli(tmp_path, *TINY, "--generations", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evolopt.train: error: '--generations 2': evolopt.train takes Hydra overrides, key=value: generations=2"
    ]
    assert list(tmp_path.iterdir()) == []

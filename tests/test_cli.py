"""The train CLI: Hydra overrides, --help, one-line errors that create nothing."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, run_cli


@pytest.mark.parametrize(
    "override, message",
    [
        ("strategy=nope", "unknown strategy 'nope'; valid choices: "),
        ("arch=nope", "unknown arch 'nope'; valid choices: "),
        ("task_family=nope", "unknown task_family 'nope'; valid choices: "),
        ("strategy.sgma=0.1", "unknown key 'strategy.sgma'; valid keys at strategy: "),
        ("bogus=1", "unknown key 'bogus'; valid keys at the top level: "),
        ("task_family.batch_size=abc", "task_family.batch_size='abc' must be of type int"),
        ("population_size=0", "population_size=0 must be a positive integer"),
        ("strategy.optimizer=wrong", "unknown outer optimizer 'wrong'; valid choices: "),
        ("plugins=[no_such_module_xyz]", "cannot import plugin 'no_such_module_xyz'"),
        ("resume=maybe", "bad resume 'maybe'; valid choices: auto, true, false"),
        ("unroll.meta_loss=test", "unroll.meta_loss='test'; valid choices: train, valid, both"),
        ("unroll.valid_share=2", "unroll.valid_share=2 must be a number in [0, 1]"),
        ("cpu_devices=0", "cpu_devices=0; valid choices: auto, a whole number >= 1, null"),
        ("cpu_devices=many", "cpu_devices='many'; valid choices: auto, a whole number >= 1, null"),
        ("compile_cache=3", "compile_cache=3; valid choices: auto, a directory path, off or null (no cache)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, override, message):
    run_dir = tmp_path / "run"
    result = run_cli(override, f"run_dir={run_dir}", "generations=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert not run_dir.exists()


def test_help_lists_groups_and_their_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for text in (
        "strategy:",
        "arch:",
        "task_family:",
        "open_es",
        "small_fc_lopt",
        "image_mlp",
        "sigma=",
        "population_size",
    ):
        assert text in result.stdout


def test_existing_run_is_never_overwritten(tiny_run):
    before = (tiny_run / "metrics.jsonl").read_text()
    result = run_cli(*TINY, "generations=4", f"run_dir={tiny_run}", "resume=false")
    assert result.returncode == 2 and "already holds a run" in result.stderr
    result = run_cli(*TINY, "generations=4", "seed=1", f"run_dir={tiny_run}")
    assert result.returncode == 2 and "holds a run with seed=0, not 1" in result.stderr
    assert (tiny_run / "metrics.jsonl").read_text() == before


def test_a_run_written_before_a_key_existed_resumes_with_its_old_value(tiny_run, tmp_path):
    import shutil

    from omegaconf import OmegaConf

    from evolopt.config import load_config
    from evolopt.registry import ConfigError
    from evolopt.resume import _check_resumable

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    cfg = OmegaConf.load(old / "config.yaml")
    del cfg.unroll["valid_share"]  # configs written before unroll.valid_share ran with 0.5
    del cfg["cpu_reassociate"]  # ... and before cpu_reassociate, with XLA's defaults (false)
    del cfg["cpu_vector_width"]  # ... and before cpu_vector_width, with XLA's own width (null)
    OmegaConf.save(cfg, old / "config.yaml")
    same = [*TINY, "generations=5", "cpu_reassociate=false", "cpu_vector_width=null", f"run_dir={old}"]
    _check_resumable(old, load_config(same))  # the same run: resumes
    with pytest.raises(ConfigError, match="holds a run with unroll="):
        _check_resumable(old, load_config([*same, "unroll.valid_share=0.2"]))
    with pytest.raises(ConfigError, match="holds a run with cpu_reassociate=false, not true"):
        _check_resumable(old, load_config([*TINY, "generations=5", f"run_dir={old}"]))  # would not repeat its numbers
    with pytest.raises(ConfigError, match="holds a run with cpu_vector_width=null, not 512"):
        _check_resumable(old, load_config([*TINY, "generations=5", "cpu_reassociate=false", f"run_dir={old}"]))


def test_tiny_run_writes_everything(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    gens = [r["generation"] for r in rows if "fitness/mean" in r]
    assert gens == [1, 2, 3, 4]
    assert {"fitness/min", "fitness/max", "theta/norm", "theta/update_norm", "speed/member_steps_per_s"} <= set(
        rows[-1]
    )
    assert rows[0]["generation"] == 0 and "meta_loss/mean_theta" in rows[0]
    for name in ("config.yaml", "theta.npz", "meta_training.png"):
        assert (tiny_run / name).is_file()
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]

"""Theta files as untrusted data: crafted headers and non-finite values are one-line ThetaFileErrors
everywhere a file is read (API, theta_init, evaluate); every written header says where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
import yaml
from conftest import REPO, TINY, run_cli

import evolopt
from evolopt.architectures import base
from evolopt.config import import_plugins_for_run
from evolopt.evaluate import main as evaluate_main
from evolopt.export import HEADER, ThetaFileError, _flatten, save_theta_file
from evolopt.registry import ARCHITECTURES


def small_theta():
    return ARCHITECTURES.build("small_fc_lopt").init_theta(jax.random.key(0))


def crafted(path, header: object, theta=None):
    """A theta file with any header at all (as an attacker or a bug would write it)."""
    arrays = _flatten(jax.device_get(small_theta() if theta is None else theta))
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
    return path


GOOD = {"format": "evolopt.theta", "version": 1, "arch": "small_fc_lopt", "arch_config": {}}


@pytest.mark.parametrize(
    "header, words",
    [
        ([1, 2], ["malformed header", "JSON object"]),
        ({k: v for k, v in GOOD.items() if k != "arch"}, ["'arch' must be a str"]),
        ({**GOOD, "arch": 3}, ["'arch' must be a str"]),
        ({**GOOD, "arch_config": [1]}, ["'arch_config' must be a dict"]),
        ({**GOOD, "arch": "nope"}, ["unknown arch 'nope'", "celo2"]),
        ({**GOOD, "arch_config": {"hidden_sise": 4}}, ["unknown option 'hidden_sise'", "hidden_size"]),
        ({**GOOD, "arch_config": {"hidden_size": "big"}}, ["hidden_size='big' must be of type int"]),
        ({**GOOD, "arch_config": {"hidden_size": 10**9}}, ["does not fit arch 'small_fc_lopt'", "wrong shapes"]),
        ({**GOOD, "arch_config": {"hidden_size": 10**30}}, ["small_fc_lopt"]),
        ({**GOOD, "version": 7}, ["version 7"]),
    ],
)
def test_crafted_headers_are_one_line_theta_file_errors(tmp_path, header, words):
    path = crafted(tmp_path / "t.npz", header)
    with pytest.raises(ThetaFileError) as e:
        evolopt.load_optimizer(path)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_non_finite_theta_is_refused_by_the_api_evaluate_and_theta_init(tmp_path, capsys):
    theta = jax.tree.map(np.asarray, small_theta())
    leaf = sorted(_flatten(theta))[0]
    flat = _flatten(theta)
    flat[leaf] = flat[leaf].copy()
    flat[leaf].flat[0] = np.nan
    path = tmp_path / "nan.npz"
    arrays = {**flat, HEADER: np.frombuffer(json.dumps(GOOD).encode(), np.uint8)}
    np.savez(path, **arrays)
    with pytest.raises(ThetaFileError, match=f"leaf '{leaf}' holds 1 non-finite values"):
        evolopt.load_optimizer(path)

    out = tmp_path / "ev"
    assert evaluate_main([f"optimizer={path}", "suite=tiny", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and not out.exists()

    run_dir = tmp_path / "run"
    result = run_cli(*TINY, f"theta_init={path}", f"run_dir={run_dir}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "non-finite" in lines[0], result.stderr
    assert not run_dir.exists()


def test_header_records_provenance_and_export_info_prints_it(tiny_run):
    from evolopt.export import load_theta_file

    _, header = load_theta_file(tiny_run / "theta.npz")
    run_cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    family = {k: v for k, v in run_cfg["task_family"].items() if k != "name"}
    assert header["task_family"] == {"name": "quadratic", "config": family} and family["dim"] == 10
    assert header["strategy"]["name"] == "open_es" and "sigma" in header["strategy"]["config"]
    assert header["seed"] == 0 and header["generation"] == 4
    assert header["versions"]["jax"] == jax.__version__ and header["versions"]["optax"] == optax.__version__
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if sha:
        assert header["git_commit"].removesuffix("+dirty") == sha
    else:  # not a git checkout (an unpacked source tree): no commit to record
        assert header["git_commit"] is None
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "meta_loss/mean_theta" in r][-1]
    assert header["evaluation"]["generation"] == last["generation"] == 4
    assert header["evaluation"]["meta_loss"] == last["meta_loss/mean_theta"]
    assert header["evaluation"]["adam_lr"] == 1e-3

    result = run_cli(f"info={tiny_run / 'theta.npz'}", module="evolopt.export_cli")
    assert result.returncode == 0, result.stderr
    assert "arch 'small_fc_lopt'" in result.stdout and '"name": "open_es"' in result.stdout


def test_export_imports_plugins_only_when_the_run_needs_them(tiny_run, tmp_path):
    said = []
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    from omegaconf import OmegaConf

    cfg["plugins"] = ["tests.plugin_example.my_tasks"]
    assert import_plugins_for_run(OmegaConf.create(cfg), said.append) == [] and said == []
    cfg["task_family"] = {"name": "my_linear_regression"}
    modules = import_plugins_for_run(OmegaConf.create(cfg), said.append)
    assert "tests.plugin_example.my_tasks" in modules
    assert said and "task_family 'my_linear_regression'" in said[0]


def test_export_run_dir_does_not_run_the_runs_plugin_code(tiny_run, tmp_path):
    canary = tmp_path / "imported"
    (tmp_path / "canary_mod.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(tiny_run), str(run)], check=True)
    text = (run / "config.yaml").read_text().replace("plugins: []", "plugins:\n- canary_mod")
    (run / "config.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "evolopt.export_cli", f"run_dir={run}", f"out={tmp_path / 'x.npz'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert not canary.exists() and (tmp_path / "x.npz").is_file()


def test_optax_conventions_value_params_none_and_inject_hyperparams(tmp_path):
    lopt = ARCHITECTURES.build("small_fc_lopt")
    path = save_theta_file(tmp_path / "s.npz", small_theta(), "small_fc_lopt", {})
    p = {"w": np.ones((3, 2), np.float32)}
    g = {"w": np.full((3, 2), 0.5, np.float32)}
    with pytest.raises(ValueError, match="^arch 'small_fc_lopt' needs params: call update"):
        lopt.optimizer(small_theta()).update(g, lopt.optimizer(small_theta()).init(p), None)
    # inject_hyperparams over the loader: the learning rate becomes state, the update is the plain one's
    inj = optax.inject_hyperparams(evolopt.load_optimizer, static_args=("path",))(path=str(path), learning_rate=1e-2)
    plain = evolopt.load_optimizer(path, learning_rate=1e-2)
    u1, s1 = jax.jit(inj.update)(g, inj.init(p), p)
    u2, _ = plain.update(g, plain.init(p), p)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
    assert float(s1.hyperparams["learning_rate"]) == pytest.approx(1e-2)


def test_celo_takes_value_as_loss_and_warns_once_without_it():
    lopt = ARCHITECTURES.build("celo")
    opt = lopt.optimizer(lopt.init_theta(jax.random.key(0)))
    p = {"w": np.ones((3, 2), np.float32)}
    g = {"w": np.full((3, 2), 0.5, np.float32)}
    s = opt.init(p)
    with_loss = opt.update(g, s, p, loss=2.0)
    with_value = opt.update(g, s, p, value=2.0)
    jax.tree.map(np.testing.assert_array_equal, with_loss, with_value)
    base._WARNED.discard("celo")
    with pytest.warns(UserWarning, match="arch 'celo' uses the training loss"):
        opt.update(g, s, p)

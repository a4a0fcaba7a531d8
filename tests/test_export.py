"""Exported optimizers: portable files, load_optimizer, and a plain optax loop on a flax model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import run_cli
from sklearn.datasets import load_digits

import evolopt
from evolopt.export import ThetaFileError
from evolopt.registry import ARCHITECTURES


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


def train_flax_mlp(opt: optax.GradientTransformationExtraArgs, steps: int = 150) -> np.ndarray:
    digits = load_digits()
    x, y = jnp.asarray(digits.data / 16.0, jnp.float32), jnp.asarray(digits.target)
    model = MLP()
    params = model.init(jax.random.key(0), x[:1])

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state, loss

    state, losses = opt.init(params), []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return np.array(losses)


def test_exported_adam_hparams_trains_flax_model_exactly_like_optax_adam(tmp_path):
    """adam_hparams' initial theta encodes Adam(1e-3, 0.9, 0.999, 1e-8): after a save/load round
    trip the optimizer must reproduce optax.adam's loss curve, and the loss must fall."""
    import evolopt.architectures  # noqa: F401

    lopt = ARCHITECTURES.build("adam_hparams")
    theta = lopt.init_theta(jax.random.key(0))
    path = evolopt.save_theta_file(tmp_path / "adam.npz", theta, "adam_hparams", {})
    ours = train_flax_mlp(evolopt.load_optimizer(path))
    reference = train_flax_mlp(optax.with_extra_args_support(optax.adam(1e-3)))
    np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=1e-5)
    assert ours[-1] < 0.5 * ours[0]


def test_meta_trained_run_exports_an_optimizer_that_trains(tiny_run, tmp_path):
    out = tmp_path / "exported.npz"
    result = run_cli(f"run_dir={tiny_run}", f"out={out}", module="evolopt.export_cli")
    assert result.returncode == 0, result.stderr[-2000:]
    theta, header = evolopt.load_theta_file(out)
    assert header["arch"] == "small_fc_lopt" and header["generation"] == 4
    run_theta, _ = evolopt.load_theta_file(tiny_run / "theta.npz")
    jax.tree.map(np.testing.assert_array_equal, theta, run_theta)
    opt = evolopt.load_optimizer(out, learning_rate=1e-3)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    losses = train_flax_mlp(opt, steps=5)
    assert np.all(np.isfinite(losses))


def test_wrong_arch_truncated_and_foreign_files_fail_clearly(tiny_run, tmp_path):
    path = tiny_run / "theta.npz"
    with pytest.raises(ThetaFileError, match="holds a 'small_fc_lopt' optimizer, not 'celo'"):
        evolopt.load_optimizer(path, arch="celo")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ThetaFileError, match="truncated or corrupt"):
        evolopt.load_optimizer(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(3))
    with pytest.raises(ThetaFileError, match="no evolopt header"):
        evolopt.load_optimizer(foreign)
    with pytest.raises(ThetaFileError, match="does not exist"):
        evolopt.load_optimizer(tmp_path / "missing.npz")
    # A file whose header claims another arch than its arrays fit.
    theta, header = evolopt.load_theta_file(path)
    evolopt.save_theta_file(tmp_path / "lying.npz", theta, "mulo", {})
    with pytest.raises(ThetaFileError, match="does not fit arch 'mulo'"):
        evolopt.load_optimizer(tmp_path / "lying.npz")


def test_export_cli_rejects_bad_input(tmp_path):
    result = run_cli(f"run_dir={tmp_path}", module="evolopt.export_cli")
    assert result.returncode == 2
    assert "is not an evolopt run directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _adam_theta_file(path, learning_rate: float, arch_config: dict | None = None):
    import evolopt.architectures  # noqa: F401

    theta = ARCHITECTURES.build("adam_hparams").init_theta(jax.random.key(0))
    theta = {**theta, "log_lr": jnp.asarray(np.log(learning_rate), jnp.float32)}
    return evolopt.save_theta_file(path, theta, "adam_hparams", arch_config or {}, seed=int(1 / learning_rate))


def test_average_of_theta_files_is_their_elementwise_mean(tmp_path):
    """theta holds log(lr), so the mean of Adam(1e-3) and Adam(1e-1) files is Adam(1e-2) (closed form):
    the averaged file must train a flax model exactly as optax.adam(1e-2), and keep both sources' provenance."""
    from evolopt.export import average_theta_files, load_theta_file

    a, b = _adam_theta_file(tmp_path / "a.npz", 1e-3), _adam_theta_file(tmp_path / "b.npz", 1e-1)
    out = average_theta_files([a, b], tmp_path / "mean.npz")
    ours = train_flax_mlp(evolopt.load_optimizer(out), steps=60)
    reference = train_flax_mlp(optax.with_extra_args_support(optax.adam(1e-2)), steps=60)
    np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=1e-5)
    _, header = load_theta_file(out)
    assert (header["arch"], header["arch_config"]) == ("adam_hparams", {})
    assert [(s["path"], s["seed"]) for s in header["averaged_from"]] == [(str(a), 1000), (str(b), 10)]


def test_average_refuses_mixed_options_its_own_input_and_a_single_file(tmp_path):
    from evolopt.export import average_theta_files

    a = _adam_theta_file(tmp_path / "a.npz", 1e-3)
    other = _adam_theta_file(tmp_path / "other.npz", 1e-3, {"init_learning_rate": 0.1})
    before = a.read_bytes()
    with pytest.raises(ThetaFileError, match=r"differ in arch options \(init_learning_rate 0.1 vs None\)"):
        average_theta_files([a, other], tmp_path / "mean.npz")
    with pytest.raises(ThetaFileError, match="is one of the files to average"):
        average_theta_files([a, other], a)
    with pytest.raises(ThetaFileError, match="needs two or more"):
        average_theta_files([a], tmp_path / "mean.npz")
    assert a.read_bytes() == before and not (tmp_path / "mean.npz").exists()


def test_export_cli_average(tmp_path):
    a, b = _adam_theta_file(tmp_path / "a.npz", 1e-3), _adam_theta_file(tmp_path / "b.npz", 1e-1)
    result = run_cli(f"average=[{a},{b}]", module="evolopt.export_cli")  # no out=
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "needs out=" in result.stderr
    result = run_cli(f"average=[{a},{b}]", f"out={tmp_path / 'mean.npz'}", module="evolopt.export_cli")
    assert result.returncode == 0, result.stderr
    theta, _ = evolopt.load_theta_file(tmp_path / "mean.npz")
    np.testing.assert_allclose(theta["log_lr"], np.log(1e-2), rtol=1e-6)


def _fake_seed_sweep(root, sigmas=(0.01, 0.01)):
    """A sweep dir as ``evolopt-train -m seed=0,1 run_dir=root`` leaves it: multirun.yaml, one run dir per job."""
    import yaml

    root.mkdir()
    (root / "multirun.yaml").write_text("hydra: {}\n")
    for job, (lr, sigma) in enumerate(zip((1e-3, 1e-1), sigmas)):
        (root / str(job)).mkdir()
        _adam_theta_file(root / str(job) / "theta.npz", lr)
        config = {"seed": job, "run_dir": f"{root}/{job}", "strategy": {"name": "pes", "sigma": sigma}}
        (root / str(job) / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def _one_job_sweep(root):
    import shutil

    shutil.rmtree(root / "1")
    return root


def test_export_average_of_a_seed_sweep_dir_is_the_mean_of_its_jobs(tmp_path, capsys):
    from omegaconf import OmegaConf

    from evolopt.export_cli import KEYS, export_job
    from evolopt.registry import ConfigError

    sweep = _fake_seed_sweep(tmp_path / "seeds")
    (sweep / "2").mkdir()  # a job that never started: no config.yaml, so the sweep is refused, naming it
    cfg = OmegaConf.create({**dict.fromkeys(KEYS), "average": str(sweep), "out": str(tmp_path / "mean.npz")})
    with pytest.raises(ConfigError, match="sweep job .*2: cannot read its config.yaml"):
        export_job(cfg)
    (sweep / "2").rmdir()
    export_job(cfg)
    theta, header = evolopt.load_theta_file(tmp_path / "mean.npz")
    np.testing.assert_allclose(theta["log_lr"], np.log(1e-2), rtol=1e-6)  # mean of log(1e-3) and log(1e-1)
    assert [s["path"] for s in header["averaged_from"]] == [str(sweep / j / "theta.npz") for j in ("0", "1")]
    assert "the mean of 2 theta files" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: _fake_seed_sweep(root, sigmas=(0.01, 0.03)), r"differ in strategy.sigma \(0.01 vs 0.03\)"),
        (lambda root: root.mkdir() or root, "is neither a list of theta files .* nor a sweep dir"),
        (lambda root: _one_job_sweep(_fake_seed_sweep(root)), "has 1 job"),
    ],
)
def test_export_average_refuses_a_sweep_that_is_not_one_recipe(tmp_path, make, message):
    from omegaconf import OmegaConf

    from evolopt.export_cli import KEYS, export_job
    from evolopt.registry import ConfigError

    sweep = make(tmp_path / "sweep")
    cfg = OmegaConf.create({**dict.fromkeys(KEYS), "average": str(sweep), "out": str(tmp_path / "mean.npz")})
    with pytest.raises(ConfigError, match=message):
        export_job(cfg)
    assert not (tmp_path / "mean.npz").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"average": 3, "out": "m.npz"}, "must be a list of theta files"),
        ({"average": ["a", "b"], "out": "m.npz", "generation": 3}, "generation= does nothing with average="),
        ({"info": "celo2-cpu", "out": "m.npz"}, "out= does nothing with info="),
        ({"info": "celo2-cpu", "run_dir": "runs/x"}, r"give one of .*got \['run_dir', 'info'\]"),
    ],
)
def test_export_cli_refuses_options_its_mode_ignores(overrides, message):
    from omegaconf import OmegaConf

    from evolopt.export_cli import KEYS, _check
    from evolopt.registry import ConfigError

    cfg = OmegaConf.create({**dict.fromkeys(KEYS), **overrides})
    with pytest.raises(ConfigError, match=message):
        _check(cfg)

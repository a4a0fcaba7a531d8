"""Task families: data loaders on generated files, losses at init, augmentation closed forms,
one-line errors, and 2 generations of meta-training per family through evolopt.loop.build."""

from __future__ import annotations

import gzip
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from evolopt import augment
from evolopt.config import load_config
from evolopt.loop import build
from evolopt.registry import TASK_FAMILIES, ConfigError
from evolopt.task_families import datasets, local_data, mnist1d


def mean_init_loss(family, n: int = 8, seed: int = 0) -> float:
    def one(key):
        task = family.sample_task(key)
        params = family.init_params(jax.random.fold_in(key, 1), task)
        return family.loss(params, task, family.sample_batch(jax.random.fold_in(key, 2), task))

    return float(jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))))


# ---------------------------------------------------------------- losses at init


@pytest.mark.parametrize(
    "name, options",
    [
        ("image_mlp", {}),
        ("image_mlp", {"datasets": ["digits", "mnist5k", "mnist1d"]}),
        ("image_conv", {}),
        ("lm", {"seq_len": 16, "batch_size": 8}),
    ],
)
def test_untrained_classifier_loss_is_log_classes(name, options):
    family = TASK_FAMILIES.build(name, **options)
    expected = math.log(256) if name == "lm" else math.log(10)
    assert family.loss_scale == pytest.approx(expected)
    assert mean_init_loss(family) == pytest.approx(expected, rel=0.08)


def test_rosenbrock_starts_at_one_and_has_its_minimum_at_offset_plus_one():
    family = TASK_FAMILIES.build("rosenbrock", dim=6)
    task = family.sample_task(jax.random.key(3))
    batch = family.sample_batch(jax.random.key(4), task)
    assert float(family.loss(family.init_params(jax.random.key(5), task), task, batch)) == pytest.approx(1.0, rel=1e-5)
    assert float(family.loss({"x": task["c"] + 1.0}, task, batch)) == pytest.approx(0.0, abs=1e-6)
    assert family.loss_scale == 1.0


def test_lm_reads_a_users_text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    family = TASK_FAMILIES.build("lm", text_file=str(path), seq_len=8, batch_size=4)
    batch = family.sample_batch(jax.random.key(0), {})
    assert batch["tokens"].shape == (4, 9)
    text = bytes(np.asarray(batch["tokens"][0], np.uint8)).decode()
    assert text in path.read_text()
    with pytest.raises(ConfigError, match="is not a file"):
        TASK_FAMILIES.build("lm", text_file=str(tmp_path / "nope.txt"))


def test_python_docs_corpus_is_real_text():
    from evolopt.task_families.lm import corpus_bytes

    data = corpus_bytes("python_docs", "")
    assert len(data) > 300_000
    assert b'The "assert" statement' in data.tobytes()


# ---------------------------------------------------------------- data sets


def test_embedded_and_generated_datasets():
    for name in ("mnist5k", "mnist1d"):
        d = datasets.load(name, 8)
        assert d.x_train.shape == (4000, 8, 8, 1) and d.x_valid.shape == (1000, 8, 8, 1)
        assert np.bincount(d.y_train, minlength=10).min() > 300  # all ten classes present
    assert 0.0 <= datasets.load("mnist5k", 8).x_train.min() and datasets.load("mnist5k", 8).x_train.max() <= 1.0
    x1, y1 = mnist1d.generate(50, seed=1)
    x2, y2 = mnist1d.generate(50, seed=1)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (50, 40) and list(y1[:10]) == list(range(10))


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:  # closed: flushed
        f.write(raw)


def fake_images(n: int, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Image i is constant, with value 10 * label(i) (checks pixel/label alignment)."""
    y = np.arange(n) % 10
    return np.broadcast_to((10 * y).reshape((n,) + (1,) * len(shape)), (n,) + shape).astype(np.uint8), y


def assert_aligned(d: datasets.ImageData) -> None:
    for x, y in ((d.x_train, d.y_train), (d.x_valid, d.y_valid)):
        np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 10 * y / 255.0, atol=1e-5)


def test_idx_loaders_read_generated_mnist_and_fashion_files(tmp_path):
    x, y = fake_images(30, (28, 28))
    (tmp_path / "fashion_mnist").mkdir()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)  # mnist: directly in data_dir, gzipped
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    write_idx(tmp_path / "fashion_mnist" / "train-images-idx3-ubyte", x[:20])  # raw, in a subfolder
    write_idx(tmp_path / "fashion_mnist" / "train-labels-idx1-ubyte", y[:20])
    np.testing.assert_array_equal(local_data.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), x)
    mnist = datasets.load("mnist", 8, True, str(tmp_path))
    assert mnist.x_train.shape == (24, 8, 8, 1) and mnist.x_valid.shape == (6, 8, 8, 1)
    assert_aligned(mnist)
    fashion = datasets.load("fashion_mnist", 8, True, str(tmp_path))
    assert len(fashion.x_train) + len(fashion.x_valid) == 20
    family = TASK_FAMILIES.build("image_mlp", datasets=["mnist", "fashion_mnist"], data_dir=str(tmp_path))
    assert mean_init_loss(family) == pytest.approx(math.log(10), rel=0.15)


def test_cifar10_binary_and_npz_loaders(tmp_path):
    x, y = fake_images(20, (32, 32, 3))
    records = np.concatenate([y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(20, -1)], axis=1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    records[:10].tofile(folder / "data_batch_1.bin")
    records[10:].tofile(folder / "data_batch_2.bin")
    d = datasets.load("cifar10", 8, True, str(tmp_path))
    assert d.x_train.shape == (16, 8, 8, 1)
    assert_aligned(d)
    colour = datasets.load("cifar10", 16, False, str(tmp_path))
    assert colour.x_train.shape == (16, 16, 16, 3)
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    np.savez(npz_dir / "cifar10.npz", x_train=x.transpose(0, 3, 1, 2), y_train=y, x_test=x[:2], y_test=y[:2])  # NCHW
    assert_aligned(datasets.load("cifar10", 8, True, str(npz_dir)))


def test_svhn_mat_loader_maps_label_10_to_0(tmp_path):
    from scipy.io import savemat

    x, y = fake_images(20, (32, 32, 3))
    labels = np.where(y == 0, 10, y)  # SVHN stores digit 0 as 10
    (tmp_path / "svhn").mkdir()
    savemat(tmp_path / "svhn" / "train_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": labels[:, None]})
    d = datasets.load("svhn", 8, True, str(tmp_path))
    assert set(np.concatenate([d.y_train, d.y_valid])) == set(range(10))
    assert_aligned(d)


@pytest.mark.parametrize(
    "name, files",
    [
        ("mnist", "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"),
        ("cifar10", "cifar-10-batches-bin/data_batch_{1..5}.bin"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_files_are_one_line_naming_files_and_data_dir(tmp_path, name, files):
    with pytest.raises(ConfigError) as err:
        datasets.load(name, 8, True, str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and files in message and str(tmp_path) in message and "data_dir" in message
    with pytest.raises(ConfigError, match="set task_family.data_dir"):
        datasets.load(name, 8, True, "")


# ---------------------------------------------------------------- augmentation


@pytest.mark.parametrize("level", ["global", "tensor", "parameter"])
def test_reparam_keeps_the_function_and_scales_gradients_by_s(level):
    plain = TASK_FAMILIES.build("image_mlp", batch_size=16)
    aug = augment.augment(plain, level)
    key = jax.random.key(7)
    task_p, task_a = plain.sample_task(key), aug.sample_task(key)
    params_p, params_a = plain.init_params(key, task_p), aug.init_params(key, task_a)
    batch = plain.sample_batch(jax.random.key(8), task_p)
    loss_p, grad_p = jax.value_and_grad(plain.loss)(params_p, task_p, batch)
    loss_a, grad_a = jax.value_and_grad(aug.loss)(params_a, task_a, aug.sample_batch(jax.random.key(8), task_a))
    assert float(loss_a) == pytest.approx(float(loss_p), rel=1e-5)
    s = task_a["reparam"]
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))  # noqa: E731
    jax.tree.map(lambda q, p, si: close(q * si, p), params_a, params_p, s)  # stored q = p / s
    jax.tree.map(lambda ga, gp, si: close(ga, si * gp), grad_a, grad_p, s)  # grad_q = s * grad_p
    scales = np.concatenate([np.ravel(x) for x in jax.tree.leaves(s)])
    assert scales.min() >= 1e-3 and scales.max() <= 1e3
    assert (np.unique(scales).size == 1) == (level == "global")
    assert aug.unaugmented is plain


def test_init_scale_multiplies_initial_params():
    plain = TASK_FAMILIES.build("quadratic")
    fam = TASK_FAMILIES.build("rosenbrock", dim=4)
    aug = augment.augment(fam, "none", init_scale_low=0.5, init_scale_high=2.0)
    key = jax.random.key(1)
    task = aug.sample_task(key)
    c = float(task["init_scale"])
    assert 0.5 <= c <= 2.0
    np.testing.assert_allclose(
        aug.init_params(key, task)["x"], c * fam.init_params(key, fam.sample_task(key))["x"], rtol=1e-6
    )
    assert augment.augment(plain) is plain  # everything off: the family itself


def test_augmentation_from_the_run_config():
    cfg = load_config(
        [*TINY, "augmentation.reparam=tensor", "augmentation.reparam_low=0.1", "augmentation.reparam_high=10"]
    )
    trainer, _ = build(cfg)
    assert trainer.family.name == "quadratic+reparam_tensor"
    with pytest.raises(
        ConfigError, match="unknown augmentation.reparam 'sideways'; valid choices: none, global, tensor, parameter"
    ):
        build(load_config([*TINY, "augmentation.reparam=sideways"]))
    with pytest.raises(ConfigError, match="need 0 < low <= high"):
        build(
            load_config(
                [*TINY, "augmentation.reparam=global", "augmentation.reparam_low=10", "augmentation.reparam_high=1"]
            )
        )


@pytest.mark.parametrize(
    "name, options",
    [
        ("image_mlp", {"batch_size": 32}),
        ("image_conv", {"batch_size": 32, "channels": [4], "strides": [2]}),
        ("lm", {"batch_size": 32, "seq_len": 8}),
        ("regression", {"batch_size": 32}),
    ],
)
def test_batch_size_mask_equals_the_plain_loss_on_the_first_b_examples(name, options):
    plain = TASK_FAMILIES.build(name, **options)
    aug = augment.augment(plain, batch_min=2)
    key = jax.random.key(5)
    task = aug.sample_task(key)
    b = int(task["batch_size"])
    assert 2 <= b < 32  # this key draws a real sub-batch
    params = aug.init_params(key, task)
    k_batch = jax.random.key(6)
    batch = aug.sample_batch(k_batch, task)
    loss, grad = jax.jit(jax.value_and_grad(aug.loss))(params, task, batch)  # one compile, not one per op
    first_b = jax.tree.map(lambda x: x[:b], plain.sample_batch(k_batch, task["base"]))  # a batch of b examples
    want, want_grad = jax.jit(jax.value_and_grad(plain.loss))(params, task["base"], first_b)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6), grad, want_grad)
    full = jax.jit(plain.loss)(params, task["base"], plain.sample_batch(k_batch, task["base"]))  # no weights: all 32
    assert float(jax.jit(aug.loss)(params, task, {k: v for k, v in batch.items() if k != "weights"})) == pytest.approx(
        float(full), rel=1e-6
    )


def test_batch_sizes_are_log_uniform_and_shared_by_antithetic_partners():
    b = jax.vmap(lambda k: augment.sample_batch_size(k, 4, 64))(jax.random.split(jax.random.key(0), 20000))
    assert int(b.min()) == 4 and int(b.max()) == 64
    # P(b <= 15) = P(U < log 16) = (log 16 - log 4) / (log 65 - log 4) for U ~ U[log 4, log 65]
    assert float(jnp.mean(b <= 15)) == pytest.approx(math.log(4) / math.log(65 / 4), abs=0.015)
    cfg = load_config([*TINY, "task_family=image_mlp", "task_family.batch_size=16", "augmentation.batch_min=2"])
    trainer, theta0 = build(cfg)
    assert trainer.family.name == "image_mlp+batch_size" and trainer.family.unaugmented.name == "image_mlp"
    sizes = np.asarray(trainer.init(jax.random.key(1), theta0).inner.task["batch_size"])  # [N, K]
    half = len(sizes) // 2
    np.testing.assert_array_equal(sizes[:half], sizes[half:])
    assert sizes.min() >= 2 and sizes.max() <= 16 and len(np.unique(sizes)) > 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["augmentation.batch_min=4"],
            "augmentation.batch_min=4 needs a family whose loss takes example weights (image_mlp, image_conv, lm); 'quadratic' has none",
        ),
        (
            ["task_family=image_mlp", "augmentation.batch_min=100"],
            "augmentation.batch_min=100 must be <= task_family.batch_size=64",
        ),
        (
            ["task_family=image_mlp", "augmentation.batch_min=-1"],
            "augmentation.batch_min=-1 must be an integer >= 0 (0: off)",
        ),
        (
            ["task_family=image_mlp", "augmentation.batch_min=2.5"],
            "augmentation.batch_min=2.5 must be an integer >= 0 (0: off)",
        ),
    ],
)
def test_bad_batch_augmentation_is_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        build(load_config([*TINY, *overrides]))
    assert str(err.value) == message


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, options, message",
    [
        (
            "image_mlp",
            {"datasets": ["nope"]},
            "unknown dataset 'nope'; valid choices: cifar10, digits, fashion_mnist, mnist, mnist1d, mnist5k, svhn",
        ),
        ("image_mlp", {"colour": True}, "unknown option 'colour' for task_family 'image_mlp'; valid options: "),
        ("image_conv", {"datasets": ["mnist1d"]}, "dataset 'mnist1d' is 1-D"),
        ("image_conv", {"channels": [8], "strides": [1, 2]}, "must be non-empty and equally long"),
        ("lm", {"corpus": "nope"}, "unknown corpus 'nope'; valid choices: python_docs"),
        ("lm", {"d_model": 30, "num_heads": 4}, "must be divisible by num_heads"),
        ("rl_gymnax", {"env": "nope"}, "unknown env 'nope'; valid choices: CartPole-v1, "),
        ("rl_gymnax", {"env": "Pendulum-v1"}, "continuous actions"),
        ("rl_gymnax", {"env": "Catch-bsuite"}, "no default return range for env 'Catch-bsuite'"),
        (
            "rl_gymnax",
            {"env": "Breakout-MinAtar"},
            "no default return range for env 'Breakout-MinAtar'; set task_family.return_range=[low,high]",
        ),
        (
            "rl_brax",
            {"env": "hopper"},
            "no default return range for env 'hopper'; set task_family.return_range=[low,high]",
        ),
        ("rl_brax", {"episode_length": 0}, "task_family.episode_length=0 must be >= 1"),
        ("rl_brax", {"backend": "nope"}, "unknown backend 'nope'; valid choices: spring, positional, generalized"),
        ("rosenbrock", {"dim": 1}, "must be >= 2"),
        ("regression", {"activation": "nope"}, "unknown activation 'nope'; valid choices: relu, tanh, gelu, silu"),
        ("regression", {"teacher_activation": "x"}, "unknown teacher_activation 'x'; valid choices: relu, tanh"),
        ("regression", {"noise_std": -0.1}, "task_family.noise_std=-0.1 must be >= 0"),
        ("regression", {"n_train": 0}, "task_family.n_train=0 must be >= 1"),
        ("mixture", {}, "task_family.members is empty"),
        ("mixture", {"members": [{"name": "nope"}]}, "unknown task_family 'nope'; valid choices: "),
    ],
)
def test_bad_options_are_one_line_with_choices(name, options, message):
    with pytest.raises(ConfigError) as err:
        TASK_FAMILIES.build(name, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- meta-training, 2 generations

FAMILY_RUNS = [
    pytest.param(["task_family=image_mlp", "task_family.batch_size=16"], id="image_mlp", marks=pytest.mark.slow),
    pytest.param(
        ["task_family=image_mlp", "task_family.datasets=[mnist5k,mnist1d]", "augmentation.reparam=global"],
        id="image_mlp-reparam",
    ),
    pytest.param(
        ["task_family=image_conv", "task_family.batch_size=16", "task_family.channels=[4,8]"],
        id="image_conv",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        ["task_family=lm", "task_family.seq_len=8", "task_family.batch_size=4", "task_family.d_model=16"],
        id="lm",
        marks=pytest.mark.slow,
    ),
    pytest.param(["task_family=rosenbrock"], id="rosenbrock"),
    pytest.param(
        ["task_family=regression", "task_family.input_dim=4", "task_family.hidden=[8]", "task_family.n_valid=64"],
        id="regression",
    ),
    pytest.param(
        [
            "task_family=mixture",
            "task_family.members=[{name:quadratic,dim:6},{name:rosenbrock,dim:4}]",  # separate layouts
            "task_family.weights=[1,2]",
        ],
        id="mixture",
    ),
    pytest.param(
        [
            "task_family=rl_gymnax",
            "task_family.env=Breakout-MinAtar",
            "task_family.num_envs=2",
            "task_family.rollout_steps=8",
            "task_family.return_range=[0,10]",
        ],
        id="rl_minatar",
        marks=pytest.mark.slow,
    ),
    # CartPole (rl_gymnax's default) and rl_brax run their steps through unroll / train_step in
    # tests/test_rl_families.py; the trainer around a family's step is the same for every env (CI time).
]


@pytest.mark.parametrize("overrides", FAMILY_RUNS)
def test_family_meta_trains_two_generations(overrides):
    small = [o for o in TINY if not o.startswith(("task_family", "population_size", "tasks_per_member", "unroll."))]
    cfg = load_config(
        [
            *small,
            *overrides,
            "population_size=4",
            "tasks_per_member=1",
            "generations=2",
            "unroll.truncation_length=3",
            "unroll.min_length=3",
            "unroll.max_length=3",
        ]
    )
    trainer, theta0 = build(cfg)
    state = trainer.init(jax.random.key(0), theta0)
    step = jax.jit(trainer.step)
    for _ in range(2):
        state, metrics = step(state)
    assert int(state.generation) == 2
    assert np.isfinite(float(metrics["fitness/mean"])) and float(metrics["fitness/nonfinite_steps"]) == 0


@pytest.mark.parametrize("size, stride", [(8, 1), (8, 2), (7, 2), (7, 3)])
def test_conv3x3_equals_lax_convolution(size, stride):
    from evolopt.task_families.image_conv import conv3x3

    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    want = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv3x3(x, kernel, stride), want, rtol=1e-5, atol=1e-5)

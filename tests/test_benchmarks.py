"""``benchmarks/arch_step_time.py``'s training-loop protocol (``--loop K``) times what it says: K
updates, each from its own scaled grads and applied to the params, against an independent
reference (the same steps written out by hand), and reports per-update times; its floors count
the multiply-adds each rule's per-element MLP does, from the published sizes, and its byte rate comes
from a stream that moves what optax.adam's update moves (XLA's own count); with freed memory held
(``host_memory``) a single call no longer faults its buffers in again, and a block too large to hold
faults in by huge pages."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module, with benchmarks/ on the path as when it runs as a script
    (its imports of the other benchmark files) and itself in ``sys.modules`` (flax's dataclasses look their
    module up), both for this test only."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(monkeypatch):
    module = load_benchmark("arch_step_time", monkeypatch)
    monkeypatch.setattr(module, "LOOP", 3)
    return module


def test_loop_applies_each_update_from_its_own_grads(bench):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -2.0, 3.0])}
    tx = optax.sgd(0.1, momentum=0.9)  # linear in the grads: a step from unscaled grads would show
    state, looped = bench.update_call(tx, params, grads)()
    expected, expected_state = params, tx.init(params)
    for scale in (1.0, 4 / 3, 5 / 3):  # the k-th of K=3 updates sees grads x (1 + k / K)
        g = jax.tree.map(lambda x: scale * x, grads)
        updates, expected_state = tx.update(g, expected_state, expected)
        expected = optax.apply_updates(expected, updates)
    for k in params:
        np.testing.assert_allclose(looped[k], expected[k], rtol=1e-6)
    np.testing.assert_allclose(state[0].trace["b"], expected_state[0].trace["b"], rtol=1e-6)


def test_loop_calls_continue_from_the_last_and_keep_the_callers_buffers(bench):
    """``--loop K``: each call continues from the state and params the last returned (donated to it, as a
    training loop's step takes them, so XLA need not copy them into the loop), and the caller's params and
    grads, shared by every rule timed, stay whole."""
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -2.0, 3.0])}
    tx = optax.sgd(0.1, momentum=0.9)
    call = bench.update_call(tx, params, grads)
    first = call()
    state, looped = call()
    assert all(x.is_deleted() for x in jax.tree.leaves(first))  # donated to the second call
    expected, expected_state = params, tx.init(params)
    for scale in (1.0, 4 / 3, 5 / 3) * 2:  # two calls of K=3 updates
        updates, expected_state = tx.update(jax.tree.map(lambda x: scale * x, grads), expected_state, expected)
        expected = optax.apply_updates(expected, updates)
    for k in params:
        np.testing.assert_allclose(looped[k], expected[k], rtol=1e-6)
    np.testing.assert_array_equal(params["w"], np.arange(6.0).reshape(2, 3))  # not donated away
    np.testing.assert_array_equal(grads["b"], [1.0, -2.0, 3.0])


def test_times_are_per_update(bench, monkeypatch):
    clock = iter(np.arange(0.0, 100.0, 0.6))  # every call takes 0.6 s of the fake clock
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench.time, "process_time", lambda: 0.0)
    call = bench.per_call(lambda: jnp.zeros(()), 3)
    wall, _ = bench.interleaved({"loop": call}, repeats=2)["loop"]
    assert wall == pytest.approx(200.0)  # 600 ms per call of 3 updates


def _python(code: str) -> str:
    """Standard output of ``python -c code`` in a fresh process, under glibc's default tunables (this
    process's environment less ``GLIBC_TUNABLES``); a failure shows its stderr."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _cost(compiled) -> dict:
    """XLA's cost analysis of a compiled call (a dict, or a one-element list of it in some jax versions)."""
    cost = compiled.cost_analysis()
    return cost[0] if isinstance(cost, list) else cost


_FAULTS_PER_CALL = """
import sys
sys.path.insert(0, {benchmarks!r})
import host_memory
if {hold}:
    assert host_memory.hold_freed_memory() is None
import jax, jax.numpy as jnp, optax
import arch_step_time as bench
params = {{f"w{{i}}": jnp.full((512, 512), 0.1 * i) for i in range(8)}}
grads = jax.tree.map(lambda x: 0.01 * x + 0.001, params)
faults = {{}}
bench.interleaved({{"adam": bench.update_call(optax.adam(1e-3), params, grads)}}, 20, faults)
print(faults["adam"])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt and getrusage's minor faults: Linux")
def test_held_memory_spares_each_call_its_page_faults():
    """Each per-call optax.adam update of 2.1M params writes 6,144 pages (updates, m, v: 3 x 8 MiB). With
    the memory held, the median call faults almost none of them in; the ``faults`` figure is counted
    from the process's own minor faults. Without it, glibc 2.36 here gave 750-4,000 per call."""

    def faults(hold: bool) -> float:
        return float(_python(_FAULTS_PER_CALL.format(benchmarks=str(REPO / "benchmarks"), hold=hold)).split()[-1])

    held = faults(True)
    assert held < 300, held  # < 5% of the pages each call writes
    free = faults(False)
    if free < 300:
        pytest.skip(f"this C library kept its freed memory by itself ({free:.0f} faults per call): nothing to compare")
    assert held < 0.2 * free, (held, free)


_BIG_BLOCK = """
import sys
sys.path.insert(0, {benchmarks!r})
import host_memory
if {hold}:
    held, failed = host_memory.hold_for_benchmark(True)  # starts this process again, with glibc's tunable
    assert failed is None, failed
    if "no huge pages" in held:
        print("SKIP", held)
        raise SystemExit(0)
import os, statistics, jax, jax.numpy as jnp
f = jax.jit(lambda x: 2.0 * x + 1.0)
x = jnp.ones((12 << 20,))  # a 48 MB output: over the largest mmap threshold glibc allows (32 MB)
jax.block_until_ready(f(x))
counts = []
for _ in range(10):
    f0 = host_memory.minor_faults()
    jax.block_until_ready(f(x))
    counts.append(host_memory.minor_faults() - f0)
print(os.environ.get("GLIBC_TUNABLES", "-"), statistics.median(counts))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's tunables and getrusage's minor faults: Linux")
def test_blocks_too_large_to_hold_fault_in_by_huge_pages():
    """A call whose output (48 MB) is larger than glibc will keep gets it from a fresh mmap each call,
    12,288 pages faulted in one by one; the benchmarks' hold starts the process again with glibc's
    hugetlb tunable, which maps such blocks on transparent huge pages: here 537 faults per call."""

    def run(hold: bool) -> tuple[str, float]:
        out = _python(_BIG_BLOCK.format(benchmarks=str(REPO / "benchmarks"), hold=hold))
        if out.startswith("SKIP"):
            pytest.skip(out.strip())
        tunables, faults = out.split()[-2:]
        return tunables, float(faults)

    tunables, held = run(True)
    assert "glibc.malloc.hugetlb=1" in tunables.split(":")
    free = run(False)[1]
    if free < 6000:
        pytest.skip(f"this C library kept the 48 MB block by itself ({free:.0f} faults per call): nothing to compare")
    assert held < 0.25 * free, (held, free)


# Per-element multiply-adds of each rule's MLP on a matrix, from the published sizes: the first layer
# mixes only the full-size channels per element (the 12 Adafactor row/column channels, 3 decays x
# {row, col, rsqrt(row), rsqrt(col)}, mix on their small vectors; small_fc_lopt's 11 time features
# fold into the bias), then the hidden layers and the heads the rule reads.
PUBLISHED_MACS = {
    "celo2": (30 - 12) * 8 + 8 * 8 + 8 * 1,  # 30 channels, MLP 8-8-3, only o_0 read at exp_mult = 0
    "celo2_base": (30 - 12) * 8 + 8 * 8 + 8 * 1,
    "celo2_ns_input": (30 - 12 + 1) * 8 + 8 * 8 + 8 * 1,  # + the NS5(m_0) channel
    "small_fc_lopt": (28 - 12) * 4 + 4 * 4 + 4 * 2,  # 28 + 11 time features, MLP 4-4-2
    "mulo": (28 - 12) * 32 + 32 * 32 + 32 * 2,  # small_fc_lopt's features, MLP 32-32-2
    "celo": (30 - 12) * 4 + 4 * 4 + 4 * 2,  # 30 features, MLP 4-4-3, (d, m) read
    "adam_hparams": 0,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MACS))
def test_floor_counts_the_multiply_adds_a_rule_does_per_element(bench, name):
    import evolopt.architectures  # noqa: F401
    from evolopt.registry import ARCHITECTURES

    arch = ARCHITECTURES.build(name)
    macs, as_matmuls = bench.mlp_macs(name, arch.init_theta(jax.random.PRNGKey(0)), arch.hparams)
    assert macs == PUBLISHED_MACS[name]
    assert as_matmuls == (name == "mulo")  # only μLO's 32-wide layers run as matmuls


def test_floor_of_a_rule_it_does_not_know_counts_every_row_and_head(bench):
    theta = {"mlp": {"w0": np.zeros((10, 5)), "b0": np.zeros(5), "w1": np.zeros((5, 3)), "b1": np.zeros(3)}}
    assert bench.mlp_macs("someone_elses", theta, {}) == (10 * 5 + 5 * 3, False)
    from evolopt.architectures import celo2

    theta = celo2.init_theta(jax.random.PRNGKey(0))
    assert bench.mlp_macs("celo2", theta, {"exp_mult": 0.5})[0] == PUBLISHED_MACS["celo2"] + 8  # o_1 read too


def test_strategy_share_is_timed_without_compiling(monkeypatch):
    """``member_steps.strategy_ms`` refuses a time that includes a compile (evosax's weakly typed
    state made the first timed ask + tell compile again, read as 13-20% of a generation)."""
    module = load_benchmark("member_steps", monkeypatch)
    assert module.strategy_ms("small_fc_lopt", population=4, tasks=2, repeats=2) > 0


def test_targets_show_the_ratio_their_floors_allow(bench, capsys):
    """A target whose two floors are further apart than its limit is marked out of reach; one whose
    floors allow it is not; without floors (the CPU-time check) no floor ratio is printed."""
    timed = {
        "mulo": {"mulo": (80.0, 150.0), "small_fc_lopt": (10.0, 20.0)},
        "celo": {"celo": (12.0, 30.0), "small_fc_lopt": (10.0, 20.0)},
    }
    floors = {"mulo": 40.0, "celo": 9.0, "small_fc_lopt": 8.0}
    bench.check_targets(timed, 0, "wall", floors)
    lines = {line.split("<=")[0].strip(): line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines.keys() == {"mulo", "celo"}
    assert "8.00  missed" in lines["mulo"] and "at floors  5.00  (out of reach at these floors)" in lines["mulo"]
    assert "1.20  met" in lines["celo"] and lines["celo"].endswith("at floors  1.12")
    bench.check_targets(timed, 1, "CPU")
    out = capsys.readouterr().out
    assert "7.50  missed" in out and "1.50  met" in out and "floors" not in out


def test_real_model_takes_every_optimizers_steps_in_turn(monkeypatch):
    """``real_model.interleaved_steps`` alternates the optimizers' steps (a, b, a, b, ...), so that the
    machine's drift hits every optimizer alike, and reports each one's median step and page faults."""
    module = load_benchmark("real_model", monkeypatch)
    order = []

    def run(name, ms):
        def step(i):
            order.append((name, i))
            return ms[i], 10 * (3 - i)

        return step

    medians = module.interleaved_steps({"sgd": run("sgd", [5.0, 1.0, 3.0]), "adamw": run("adamw", [2.0, 9.0, 4.0])}, 3)
    assert order == [("sgd", 0), ("adamw", 0), ("sgd", 1), ("adamw", 1), ("sgd", 2), ("adamw", 2)]
    assert medians == {"sgd": (3.0, 20), "adamw": (4.0, 20)}
    assert module.reference_note(121.0, 123.0) is None and module.reference_note(126.0, 120.0) is None  # within 5%
    note = module.reference_note(140.0, 120.0)
    assert "1.17x AdamW's" in note and "understates" in note


def test_ab_revisions_runs_the_two_revisions_generations_in_turn(monkeypatch, capsys):
    """``ab_revisions.compare`` asks each revision's worker for one generation (or, ``--update``, one call of
    updates) in turn (a, b, a, b, ...) and reports each one's median and the paired ratios (each a against
    the b timed after it)."""
    module = load_benchmark("ab_revisions", monkeypatch)
    order, work = [], {"per_call": 6400}  # member-steps per generation (with --update: updates per call)

    class Worker:  # a worker process's pipes: a ready line, then one timing per request
        def __init__(self, rev, times):
            ready = {"ready": True, "work": work["per_call"]}
            self.rev, self.lines = rev, iter([ready] + [{"ms": t} for t in times])
            self.stdin, self.stdout = self, self

        def write(self, text):
            order.append(self.rev)

        def readline(self):
            return module.json.dumps(next(self.lines)) + "\n"

        def flush(self):
            pass

        close = flush

        def wait(self):
            return 0

    times = {"old": [30.0, 10.0, 20.0], "new": [10.0, 20.0, 5.0]}
    monkeypatch.setattr(module, "start_worker", lambda tree, args: Worker(tree, times[tree]))
    args = module.argparse.Namespace(
        arch="celo2", task="image_mlp", population=32, tasks=4, truncation=50, repeats=3, update=False, loop=8
    )
    module.compare({"old": "old", "new": "new"}, args)
    assert order == ["old", "new"] * 3
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert rows == {"old": ["20.0", "320000"], "new": ["10.0", "640000"]}  # medians; 6400 member-steps per generation
    assert "old / new time: 2.00 (medians); paired ratios 0.50..4.00, median 3.00" in out

    # --update: each worker's work is the updates per call (its ready line), and times print per update.
    work["per_call"] = 8
    module.compare({"old": "old", "new": "new"}, module.argparse.Namespace(**{**vars(args), "update": True}))
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert rows == {"old": ["2.50"], "new": ["1.25"]} and "8 per call" in out  # medians 20 and 10 ms / 8 updates
    assert "old / new time: 2.00 (medians)" in out


@pytest.mark.parametrize("options", [(False, None), (True, 512)])
def test_stream_moves_what_adams_update_moves(bench, options):
    """The stream that sets the byte floors moves, by XLA's own count of the compiled calls' bytes, what
    optax.adam's update moves on the same tensors (less a few scalar bytes: its step count and bias
    corrections): the rate is per byte counted as adam achieves it. Both move 1.5x the 6 arrays counted
    (XLA runs one loop per new array, re-reading g and the new m and v), as the floors' docstring says."""
    kernels = [jnp.ones((64, 32)), jnp.ones((48, 128))]
    g = [0.01 * k for k in kernels]
    stream = _cost(bench.jit(bench.adam_shaped, options).lower(g, g, g).compile())["bytes accessed"]
    tx = optax.adam(1e-3)
    adam = _cost(bench.jit(tx.update, options).lower(g, tx.init(kernels)).compile())["bytes accessed"]
    counted = 6 * sum(x.nbytes for x in kernels)
    assert adam - 64 <= stream <= adam and stream == pytest.approx(1.5 * counted, rel=0.01)


@pytest.mark.parametrize("shape", [(64, 32), (48, 128), (3, 2, 40, 24)])
def test_newton_schulz_flops_match_xla_count(shape, monkeypatch):
    """``loop_floors.ns_flops`` (the breakdown's Newton-Schulz work per matrix) against XLA's own cost
    analysis of one step of ``celo2.newton_schulz``, times its 5 steps; XLA also counts the few
    elementwise operations, so it may come out a little higher, never lower."""
    module = load_benchmark("loop_floors", monkeypatch)
    from evolopt.architectures.celo2 import newton_schulz

    xla_flops = 5 * _cost(jax.jit(lambda x: newton_schulz(x, steps=1)).lower(jnp.ones(shape)).compile())["flops"]
    assert 0.9 * xla_flops <= module.ns_flops(shape) <= xla_flops


@pytest.mark.parametrize("name", ["celo2", "celo2_base", "mulo"])
def test_fitness_loop_mlp_floor_counts_the_tensors_each_rule_updates(name, monkeypatch):
    """``loop_floors.mlp_tensors`` (the breakdown's features + MLP floor): image_mlp's default model is
    8x8 digits -> 32 -> 10 classes; celo2 gives its two vectors to Adam, the other rules learn all four
    tensors; the multiply-adds per element are the published sizes'."""
    module = load_benchmark("loop_floors", monkeypatch)  # it imports member_steps, as when run as a script
    shapes, macs, wide = module.mlp_tensors(name, "image_mlp")
    matrices = [(64, 32), (32, 10)]
    assert sorted(shapes) == sorted(matrices if name == "celo2" else matrices + [(32,), (10,)])
    assert (macs, wide) == (PUBLISHED_MACS[name], name == "mulo")


def test_device_script_accounts_for_every_dependency():
    """``device_figures.sh`` runs on a GPU image without network: each of evolopt's dependencies
    must be on the image, carried as a pinned wheel, or declared not needed there, so a dependency
    added to pyproject without a decision here fails this test rather than the lent machine's run."""
    import re
    import subprocess

    script = (REPO / "benchmarks" / "device_figures.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "device_figures.sh")]).returncode == 0

    def words(array: str) -> list[str]:  # the items of a bash array ``NAME=(...)``, its comment left out
        return re.search(rf"^{array}=\(([^)]*)\)", script, re.M | re.S).group(1).split()

    def names(array: str) -> set[str]:
        return {re.split(r"[=<>]", w)[0].lower().replace("_", "-") for w in words(array)}

    carried = [w for a in ("DEVICE_WHEELS", "BUILD_WHEELS", "FROM_SOURCE") for w in words(a)]
    assert carried and all(re.fullmatch(r"[\w.-]+==[\w.]+", w) for w in carried)  # pinned: one version each
    pyproject = (REPO / "pyproject.toml").read_text()
    deps_block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    deps = {
        re.match(r'\s*"([\w.-]+)', line).group(1).lower().replace("_", "-")
        for line in deps_block.splitlines()
        if line.strip().startswith('"')
    }
    accounted = names("IMAGE_HAS") | names("DEVICE_WHEELS") | names("NOT_NEEDED")
    assert "evosax" in deps and deps - accounted == set()


@pytest.mark.parametrize("per_leaf", [False, True])
def test_grouped_update_computes_the_rule_tensor_by_tensor(monkeypatch, per_leaf):
    """``compile_time.grouped_update`` (the rule vmapped over same-shaped tensors, state stacked or one per
    tensor) gives the unrolled update of every tensor and its state, on a tree where celo2 routes tensors by
    name (biases and embeddings to Adam) and by rank."""
    ct = load_benchmark("compile_time", monkeypatch)
    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    shapes = {"Dense_0": {"kernel": (8, 4), "bias": (4,)}, "Dense_1": {"kernel": (8, 4), "bias": (4,)}}
    shapes["Embed_0"] = {"embedding": (16, 4)}
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 10))
    params = jax.tree.map(lambda s: jax.random.normal(next(keys), s), shapes, is_leaf=lambda x: isinstance(x, tuple))
    grads = jax.tree.map(lambda p: 0.1 * jax.random.normal(next(keys), p.shape), params)
    arch = ARCHITECTURES.build("celo2")
    tx = arch.optimizer(arch.init_theta(jax.random.PRNGKey(1)))

    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in with_path]
    groups = ct.shape_groups([p for _, p in with_path])
    assert [[names[i] for i in g] for g in groups] == [
        ["Dense_0/bias", "Dense_1/bias"],
        ["Dense_0/kernel", "Dense_1/kernel"],
        ["Embed_0/embedding"],
    ]
    states = ct.grouped_init(tx, [p for _, p in with_path], groups, names, per_leaf)
    update = jax.jit(ct.grouped_update(tx, treedef, groups, names, per_leaf))
    state = tx.init(params)
    for _ in range(2):  # the second step reads the state the first one wrote
        expected, state = tx.update(grads, state, params)
        got, states = update(grads, states, params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_kernel_profile_sums_each_kernel_per_generation_and_reads_its_hlo(monkeypatch):
    """``kernel_profile.kernel_table`` adds up each kernel's traced durations (microseconds) per generation,
    leaves out host events and control-flow thunks (their kernels are counted on their own), and
    ``describe`` reads a kernel's output shape, compute ops and source op from the module text."""
    module = load_benchmark("kernel_profile", monkeypatch)
    events = [
        {"ph": "X", "name": "add_add_fusion.3", "dur": 300},
        {"ph": "X", "name": "add_add_fusion.3", "dur": 500},
        {"ph": "X", "name": "dot.6", "dur": 1000},
        {"ph": "X", "name": "while.391", "dur": 5000},  # control flow: its kernels are traced too
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9000},  # the runtime, not a kernel
        {"ph": "X", "name": "$api.py:2479 block_until_ready", "dur": 9000},
        {"ph": "i", "name": "dot.6", "dur": 7},  # not a complete event
    ]
    assert module.kernel_table(events, generations=2) == [("dot.6", 0.5, 0), ("add_add_fusion.3", 0.4, 1)]
    hlo = "\n".join(
        [
            "%fused_computation.7 (param_0: f32[4,8]) -> f32[4,8] {",
            "  %param_0 = f32[4,8]{1,0} parameter(0)",
            "  %broadcast.1 = f32[4,8]{1,0} broadcast(%param_0), dimensions={}",
            "  %multiply.1 = f32[4,8]{1,0} multiply(%param_0, %broadcast.1)",
            "  %multiply.2 = f32[4,8]{1,0} multiply(%multiply.1, %param_0)",
            "  ROOT %add.1 = f32[4,8]{1,0} add(%multiply.2, %param_0)",
            "}",
            "",
            "ENTRY %main {",
            "  %add_add_fusion.3 = f32[4,8]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.7, "
            'metadata={op_name="jit(step)/while/body/add"}',
            "}",
        ]
    )
    described = module.describe(hlo, "add_add_fusion.3").split()
    assert described == ["f32[4,8]{1,0}", "multiply", "2", "add", "1", "add"]
    assert module.describe(hlo, "no_such_kernel") == ""


def test_kernel_profile_finds_the_fused_loops_that_hold_an_mlp(monkeypatch):
    """``kernel_profile.mlp_loops``: fused computations with over ``MLP_MULTIPLIES`` multiplies (a per-element
    MLP's loop), with their multiply count and first parameter's shape; smaller fusions are left out."""
    module = load_benchmark("kernel_profile", monkeypatch)

    def fusion(name: str, shape: str, multiplies: int) -> str:
        body = [f"  %multiply.{i} = {shape}{{1,0}} multiply(%param_0, %param_1)" for i in range(multiplies)]
        return "\n".join([f"%{name} (param_0.12: {shape}, param_1.3: f32[]) -> {shape} {{", *body, "}"])

    big = module.MLP_MULTIPLIES + 1
    hlo = "\n\n".join(
        [fusion("fused_computation.1", "f32[4,2,32,10]", big), fusion("fused_computation.2", "f32[8]", 3)]
    )
    hlo += "\n\n" + fusion("fused_computation.3", "f32[4,8,8]", 2 * big)
    assert module.mlp_loops(hlo) == [(big, "f32[4,2,32,10]"), (2 * big, "f32[4,8,8]")]


def test_kernel_profile_thread_use_and_kinds(monkeypatch):
    """``kernel_profile.thread_use``: the span from the first kernel's start to the last one's end and each
    thread's time inside kernels, control flow and host events left out; ``kinds`` adds up the kernels
    whose output shape and ops agree (one per parameter tensor), whatever jax op each came from."""
    module = load_benchmark("kernel_profile", monkeypatch)
    events = [
        {"ph": "X", "name": "fusion.1", "ts": 100, "dur": 50, "tid": 7},
        {"ph": "X", "name": "fusion.2", "ts": 160, "dur": 40, "tid": 7},
        {"ph": "X", "name": "fusion.3", "ts": 120, "dur": 100, "tid": 8},
        {"ph": "X", "name": "while.9", "ts": 0, "dur": 900, "tid": 8},  # control flow: not a kernel
        {"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0, "dur": 900, "tid": 9},
    ]
    assert module.thread_use(events) == (120, {7: 90, 8: 100})
    assert module.thread_use([]) == (0.0, {})

    def fusion(name: str, shape: str) -> list[str]:
        return [
            f"%fused_{name} (param_0: {shape}) -> {shape} {{",
            f"  %multiply.{name} = {shape}{{1,0}} multiply(%param_0, %param_0)",
            "}",
            "",
        ]

    hlo = "\n".join(
        fusion("a", "f32[4,8]")
        + fusion("b", "f32[4,8]")
        + fusion("c", "f32[2]")
        + [
            "ENTRY %main {",
            '  %k.1 = f32[4,8]{1,0} fusion(%p), kind=kLoop, calls=%fused_a, metadata={op_name="jit(f)/add"}',
            '  %k.2 = f32[4,8]{1,0} fusion(%q), kind=kLoop, calls=%fused_b, metadata={op_name="jit(f)/mul"}',
            '  %k.3 = f32[2]{0} fusion(%r), kind=kLoop, calls=%fused_c, metadata={op_name="jit(f)/add"}',
            "}",
        ]
    )
    table = [("k.1", 2.0, 1), ("k.3", 1.5, 1), ("k.2", 1.0, 1)]
    assert module.kinds(table, hlo) == [("f32[4,8]{1,0} multiply 1", 3.0, 2), ("f32[2]{0} multiply 1", 1.5, 1)]

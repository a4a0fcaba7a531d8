"""Faults a user meets on a cluster (issue 14): each is injected and its outcome asserted.

Kills land at named points (``EVOLOPT_FAULT=point:n[:action]``, see evolopt/run_dir.py)
inside config, metrics, checkpoint and theta writes; after each, the *same command*
must go on, and the finished run's metrics.jsonl must equal an uninterrupted run's
(every generation once, in order, same numbers; timings excepted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from evolopt.registry import ConfigError
from evolopt.run_dir import RunLock

GENS = 6
# the tiny run, evaluated every generation so that pipelined evaluations are covered
ARGS = [
    "population_size=4",
    "tasks_per_member=2",
    "unroll.truncation_length=10",
    "unroll.min_length=20",
    "unroll.max_length=40",
    "evaluation.steps=20",
    "evaluation.num_tasks=2",
    "evaluation.meta_loss_every=1",
    "evaluation.every=2",
    "task_family=quadratic",
    "arch=small_fc_lopt",
    "progress=false",
    f"generations={GENS}",
    "checkpoint_every=2",
]


def train(run_dir: Path, *extra: str, fault: str | None = None, env: dict | None = None):
    env = {**(env or {}), **({"EVOLOPT_FAULT": fault} if fault else {})}
    return run_cli(*ARGS, *extra, f"run_dir={run_dir}", env=env)


def numbers(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("speed/") and k != "time"} for r in rows]


def tb_scalars(tb: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``tag`` in the run's top-level event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = []
    for f in sorted(tb.glob("events.out.tfevents*")):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            out += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
            i += 12 + n + 4
    return out


def checkpoints(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _progress(line: str) -> bool:
    """The start line, progress lines off a terminal and the resume line (evolopt/progress.py)."""
    return line.endswith("compiling...") or line.startswith(("generation ", "resumed at generation"))


def one_line(stderr: str) -> str:
    """The one line a fault or a bad value prints (besides the run's ordinary progress lines)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not _progress(line)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = numbers(run_dir), numbers(reference)
    assert [r["generation"] for r in got] == list(range(GENS + 1))
    assert got == want
    steps = [s for s, _ in tb_scalars(run_dir / "tb", "fitness/mean")]
    assert steps == list(range(1, GENS + 1))  # TensorBoard: every generation once
    from evolopt.export import HEADER

    with np.load(run_dir / "theta.npz") as a, np.load(reference / "theta.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in b.files:
            if k != HEADER:  # the header names the run dir
                np.testing.assert_array_equal(a[k], b[k])


# (fault, what must be true right after the kill) — run one after the other on one run dir
KILL_CHAIN = [
    ("startup:1", lambda d: sorted(p.name for p in d.iterdir()) == [".lock"]),  # a stale lock
    ("write:config.yaml:1", lambda d: not (d / "config.yaml").exists()),
    ("append:metrics.jsonl:2", lambda d: not (d / "metrics.jsonl").read_text().endswith("\n")),  # half line
    ("save:checkpoint:1", lambda d: checkpoints(d) == []),  # inside orbax's write of generation 2
    ("write:theta.npz:1", lambda d: checkpoints(d) == [2]),
    ("write:config.yaml:1", lambda d: (d / "config.yaml").stat().st_size > 0),  # resume rewrites it
    ("write:metrics.jsonl:1", lambda d: len(numbers(d)) >= 3),  # resume trims it
    ("logged:generation:3", lambda d: checkpoints(d) == [2, 4] and numbers(d)[-1]["generation"] == 5),
    ("append:metrics.jsonl:1", lambda d: checkpoints(d) == [2, 4]),  # generation 5's line cut
]


@pytest.mark.slow
def test_kill_anywhere_then_the_same_command_finishes_the_same_run(tmp_path, reference):
    run_dir = tmp_path / "killed"
    for fault, after in KILL_CHAIN:
        result = train(run_dir, fault=fault)
        assert result.returncode == -9, (fault, result.stderr[-3000:])
        assert after(run_dir), fault
        config = run_dir / "config.yaml"
        assert not config.exists() or config.stat().st_size > 0, fault
    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run_dir, reference)
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_sigterm_and_sigint_checkpoint_and_exit_128_plus_signal(tmp_path, reference):
    run_dir = tmp_path / "signals"
    # the signal arrives while generation 2 runs: it is finished, logged and checkpointed
    result = train(run_dir, fault="logged:generation:1:term")
    assert result.returncode == 128 + 15, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == "evolopt.train: stopped at generation 2; the same command resumes"
    assert "Traceback" not in result.stderr
    assert checkpoints(run_dir) == [2] and numbers(run_dir)[-1]["generation"] == 2

    result = train(run_dir, fault="logged:generation:1:int")  # Ctrl-C
    assert result.returncode == 128 + 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == "evolopt.train: stopped at generation 4; the same command resumes"
    assert checkpoints(run_dir) == [2, 4]

    result = train(run_dir, fault="logged:generation:1:term2")  # a second signal: stop at once
    assert result.returncode == 128 + 15, result.stderr[-3000:]
    assert "second signal" in result.stderr.splitlines()[-1]
    assert checkpoints(run_dir) == [2, 4]

    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    run_dir = tmp_path / "corrupt"
    shutil.copytree(reference, run_dir)
    assert checkpoints(run_dir) == [4, 6]  # two kept by default
    arrays = list((run_dir / "checkpoints" / "6").glob("default/ocdbt.process_0/*/*"))
    assert arrays
    for data in arrays:  # the arrays' files cut short (a half-copied or damaged checkpoint)
        data.write_bytes(data.read_bytes()[:20])
    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if "restore" in line]
    assert len(notes) == 2, result.stderr[-3000:]
    assert notes[0].startswith("evolopt.train: checkpoint of generation 6 does not restore")
    assert notes[1] == "evolopt.train: resuming from generation 4, the newest checkpoint that restores"
    assert (run_dir / "corrupt_checkpoints" / "6").is_dir()
    assert checkpoints(run_dir) == [4, 6]
    assert_same_run(run_dir, reference)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only); None where mounting is not allowed (or EVOLOPT_TEST_NO_MOUNT is set)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)]
    if os.environ.get("EVOLOPT_TEST_NO_MOUNT") or subprocess.run(mount, capture_output=True).returncode:
        yield None
        return
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def fill(path: Path) -> None:
    with open(path, "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def no_half_files(run_dir: Path) -> bool:
    return not any(p.is_file() and p.stat().st_size == 0 for p in run_dir.rglob("*"))


@pytest.mark.slow
def test_full_disk_at_start_and_mid_run_then_the_same_command_resumes(tmp_path, small_disk, reference):
    if small_disk is None:  # no mount: the same errors, injected
        run_dir, filler = tmp_path / "full", None
        start_fault, mid_fault, env = "write:config.yaml:1:enospc", "append:metrics.jsonl:5:enospc", {}
    else:
        run_dir, filler = small_disk / "run", small_disk / "filler"
        fill(filler)
        start_fault, mid_fault = None, "logged:generation:3:fill"
        env = {"EVOLOPT_FAULT_FILL": str(filler)}
    result = train(run_dir, fault=start_fault, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "No space left on device" in one_line(result.stderr)
    assert not (run_dir / "config.yaml").exists() and no_half_files(run_dir)

    if filler is not None:
        filler.unlink()
    result = train(run_dir, fault=mid_fault, env=env)  # the disk fills during generation 4
    assert result.returncode == 1, result.stderr[-3000:]
    assert "No space left on device" in one_line(result.stderr)
    assert checkpoints(run_dir) == [2] and no_half_files(run_dir)

    if filler is not None:
        filler.unlink()
    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_non_finite_mean_theta_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    from evolopt.export import load_theta_file

    run_dir = tmp_path / "diverges"  # Adam steps of 1e18: |theta| overflows float32 in generation 2
    result = train(run_dir, "strategy=open_es", "strategy.learning_rate=1e18", "checkpoint_every=1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "the mean theta became non-finite at generation 2" in result.stderr.splitlines()[-1]
    assert checkpoints(run_dir) == [1]
    theta, header = load_theta_file(run_dir / "theta.npz")
    assert header["generation"] == 1
    assert all(np.isfinite(v).all() for v in _leaves(theta))


def _leaves(tree):
    return [x for v in tree.values() for x in (_leaves(v) if isinstance(v, dict) else [v])]


def test_a_run_dir_in_use_is_refused_with_its_holder(tmp_path):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    RunLock(run_dir).acquire()  # held by this (live) process
    result = train(run_dir)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert str(run_dir) in line and f"process {os.getpid()} on host {socket.gethostname()}" in line
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written


def test_run_lock_one_holder_stale_taken_over_foreign_host_refused(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} 1\n")  # pid 1: alive, not us
    with pytest.raises(ConfigError, match="in use by process 1 on host"):
        second.acquire()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    second.acquire()  # its process is gone: taken over
    assert second.holder() == (socket.gethostname(), os.getpid())
    (tmp_path / ".lock").write_text("some-other-host 12345\n")
    with pytest.raises(ConfigError, match="in use by process 12345 on host some-other-host"):
        RunLock(tmp_path).acquire()


def test_recover_drops_a_half_line_and_generations_after_the_checkpoint(tmp_path):
    from evolopt.logger import CURVES_SUFFIX, EventFile, recover

    rows = [{"generation": g, "fitness/mean": float(g)} for g in range(5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"generation": 5, "fi')
    events = EventFile(tmp_path / "tb")
    for r in rows:
        events.scalar("fitness/mean", r["fitness/mean"], r["generation"])
    events.close()
    for generation in (0, 2, 4):  # each evaluation's curves in an event file of their own
        curves = EventFile(tmp_path / "tb", suffix=f"{CURVES_SUFFIX}{generation:06d}")
        curves.scalar(f"eval_curve/gen_{generation:06d}/learned", 1.0, 0)
        curves.close()
    recover(tmp_path, 2)
    assert numbers(tmp_path) == rows[:3]
    assert tb_scalars(tmp_path / "tb", "fitness/mean") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    kept = sorted(p.name.rpartition(CURVES_SUFFIX)[2] for p in (tmp_path / "tb").iterdir() if CURVES_SUFFIX in p.name)
    assert kept == ["000000", "000002"]
    recover(tmp_path, 0)  # a run that starts afresh keeps nothing
    assert (tmp_path / "metrics.jsonl").read_text() == ""


BAD = [
    (["strategy.sigma=0"], "strategy.sigma=0"),
    (["strategy.sigma=-0.1"], "strategy.sigma=-0.1"),
    (["strategy=pes", "population_size=7"], "population_size=7 must be even"),
    (["~seed"], "seed=None must be an integer"),
    (["seed=${oc.env:EVOLOPT_SURELY_UNSET}"], "bad value for 'seed'"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_numbers_one_line_exit_2_nothing_created(tmp_path, capsys, overrides, message):
    from evolopt.train import main

    run_dir = tmp_path / "bad"
    args = [a for a in ARGS if not a.startswith("population_size=") or "population_size=7" not in overrides]
    assert main([*args, *overrides, f"run_dir={run_dir}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("evolopt.train: error:") and message in line, line
    assert not run_dir.exists()


def test_population_too_large_for_memory_refused_before_the_run_dir(tmp_path, monkeypatch):
    import evolopt.loop
    import evolopt.meta
    from evolopt.config import load_config

    run_dir = tmp_path / "huge"
    cfg = load_config([*ARGS, f"run_dir={run_dir}"])
    monkeypatch.setattr(evolopt.meta, "free_device_memory", lambda: 1000)  # bytes
    with pytest.raises(ConfigError, match=r"population_size=4 does not fit: even one member at a time"):
        evolopt.loop.meta_train(cfg)
    assert not run_dir.exists()


@pytest.mark.slow
def test_time_budget_checkpoints_and_the_same_command_continues(tmp_path):
    run_dir = tmp_path / "budget"
    result = train(run_dir, "time_budget_minutes=0.000001")  # spent within the first generation
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget of 1e-06 min spent at generation 1" in result.stderr
    assert checkpoints(run_dir) == [1] and numbers(run_dir)[-1]["generation"] == 1
    result = train(run_dir, "time_budget_minutes=0.000001")
    assert result.returncode == 0 and checkpoints(run_dir) == [1, 2]

"""One run over several processes (jax.distributed, gloo collectives on CPU).

Two local processes with two forced CPU devices each form one 4-device mesh; their
run must be the run a single process with 4 devices makes from the same seed,
resume across processes, and fail in bounded time when a process dies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, TINY, run_cli
from test_sharding import fitness

from evolopt import distributed
from evolopt.meta import choose_member_chunks
from evolopt.registry import ConfigError


def launch(args: list[str], processes: int = 2, devices: int = 2) -> list[subprocess.Popen]:
    port = distributed.free_local_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evolopt.train",
                *args,
                f"distributed.coordinator=127.0.0.1:{port}",
                f"distributed.num_processes={processes}",
                f"distributed.process_id={i}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]


@pytest.mark.slow
def test_two_processes_make_the_four_device_run_and_resume(tmp_path):
    args = [*TINY, "checkpoint_every=2"]
    multi, single = tmp_path / "multi", tmp_path / "single"
    for generations in (4, 6):  # 4 generations, then resume to 6 in two fresh processes
        out = finish(launch([*args, f"generations={generations}", f"run_dir={multi}"]))
        for rc, _, err in out:
            assert rc == 0, err[-3000:]
        assert "run saved to" in out[0][1] and "run saved to" not in out[1][1]  # only process 0 reports
    r = run_cli(
        *args, "generations=6", f"run_dir={single}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # one writer: exactly one metrics row per generation, not one per process
    gens = [json.loads(line)["generation"] for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert gens == sorted(set(gens)) and len(fitness(multi)) == 6
    np.testing.assert_allclose(fitness(multi), fitness(single), rtol=1e-5, atol=1e-6)
    assert (multi / "theta.npz").is_file() and sorted(
        p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()
    ) == ["4", "6"]


@pytest.mark.slow
def test_a_dead_process_stops_the_others_in_bounded_time(tmp_path):
    run_dir = tmp_path / "run"
    heartbeat = 5
    procs = launch(
        [
            *TINY,
            "generations=100000",
            "checkpoint_every=1000",
            f"run_dir={run_dir}",
            f"distributed.heartbeat_timeout_s={heartbeat}",
        ]
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 400
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
        time.sleep(0.5)
    assert metrics.exists(), "the run never started"
    procs[1].kill()
    killed = time.time()
    try:
        _, err = procs[0].communicate(timeout=heartbeat + 90)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("process 0 hung after process 1 died")
    procs[1].communicate()
    assert procs[0].returncode != 0
    assert time.time() - killed < heartbeat + 90
    assert "another task died" in err or "lost contact" in err, err[-3000:]


def test_cluster_detection(monkeypatch):
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.detected_cluster() is None
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is a lone process
    assert distributed.detected_cluster() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.detected_cluster() == "SLURM"
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.detected_cluster() == "Open MPI"


def test_bad_distributed_options_fail_in_one_line():
    for bad, expected in [
        (
            ["distributed.coordinator=127.0.0.1:1", "distributed.num_processes=2", "distributed.process_id=2"],
            "0 <= distributed.process_id < num_processes",
        ),
        (
            ["distributed.coordinator=localhost", "distributed.num_processes=2", "distributed.process_id=0"],
            "must be HOST:PORT",
        ),
        (
            [
                "distributed.coordinator=127.0.0.1:1",
                "distributed.num_processes=2",
                "distributed.process_id=0",
                "distributed.cpu_collectives=nccl",
            ],
            "valid choices: gloo, mpi",
        ),
    ]:
        r = run_cli(*TINY, *bad, "run_dir=/nonexistent/never")
        assert r.returncode == 2, r.stderr[-2000:]
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(ConfigError, match="HOST:PORT"):
        distributed.initialize({"coordinator": "nohost", "num_processes": 1, "process_id": 0})
    assert distributed.initialize({"enabled": False}) is False


def test_member_chunks_auto_picks_the_fewest_chunks_that_fit():
    gib = 2**30
    # 8 members per device; 1 GiB fixed + 10 GiB of temporaries / C must fit in the budget
    assert choose_member_chunks(gib, 10 * gib, 8, 20 * gib) == 1
    assert choose_member_chunks(gib, 10 * gib, 8, 4 * gib) == 4  # 1 + 10/2 = 6 > 4; 1 + 10/4 = 3.5
    assert choose_member_chunks(gib, 10 * gib, 6, 4 * gib) == 6  # divisors of 6: 3 gives 4.33 > 4
    assert choose_member_chunks(gib, 10 * gib, 8, 0.5 * gib) == 8  # nothing fits: one member at a time

"""The population axis is sharded over devices; 4 CPU devices give 1 device's fitness, whether
``cpu_devices=4`` or ``XLA_FLAGS`` (which wins over ``cpu_devices=auto``) asks for them."""

from __future__ import annotations

import json

import numpy as np
from conftest import TINY, run_cli


def fitness(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return np.array(
        [[r["fitness/mean"], r["fitness/min"], r["fitness/max"], r["theta/norm"]] for r in rows if "fitness/mean" in r]
    )


def test_four_devices_match_one_device(tmp_path):
    args = [*TINY, "generations=3", "checkpoint_every=3"]
    one, four = tmp_path / "one", tmp_path / "four"
    r1 = run_cli(*args, f"run_dir={one}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    assert r1.returncode == 0, r1.stderr[-2000:]
    r4 = run_cli(*args, "cpu_devices=4", f"run_dir={four}", env={"XLA_FLAGS": ""})  # more than CI's 2 cores
    assert r4.returncode == 0, r4.stderr[-2000:]
    assert "on 4 cpu device(s)" in r4.stderr
    # Same numbers to float tolerance (reductions may associate differently across shards).
    np.testing.assert_allclose(fitness(four), fitness(one), rtol=1e-5, atol=1e-6)
    chunked = tmp_path / "four_chunked"  # 2 members per device, trained one at a time
    rc = run_cli(
        *args, "member_chunks=2", f"run_dir={chunked}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    )
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert "on 4 cpu device(s)" in rc.stderr  # XLA_FLAGS' count, not auto's (at most one per core)
    np.testing.assert_allclose(fitness(chunked), fitness(one), rtol=1e-5, atol=1e-6)


def test_population_must_split_evenly_over_devices(tmp_path):
    result = run_cli(
        *TINY,
        "population_size=6",
        f"run_dir={tmp_path / 'x'}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert result.returncode == 2
    assert "population_size 6 must be divisible by 2 x devices = 8" in result.stderr
    asked = run_cli(*TINY, "population_size=6", "cpu_devices=4", f"run_dir={tmp_path / 'y'}", env={"XLA_FLAGS": ""})
    assert asked.returncode == 2  # a number is taken as given, not rounded to one that splits
    assert "population_size 6 must be divisible by 2 x devices = 8" in asked.stderr
    assert not (tmp_path / "y").exists()

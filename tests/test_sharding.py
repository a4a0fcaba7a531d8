"""The population axis is sharded over devices; 4 forced CPU devices give 1 device's fitness."""

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
    r4 = run_cli(*args, f"run_dir={four}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert r4.returncode == 0, r4.stderr[-2000:]
    # Same numbers to float tolerance (reductions may associate differently across shards).
    np.testing.assert_allclose(fitness(four), fitness(one), rtol=1e-5, atol=1e-6)
    chunked = tmp_path / "four_chunked"  # 2 members per device, trained one at a time
    rc = run_cli(
        *args, "member_chunks=2", f"run_dir={chunked}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    )
    assert rc.returncode == 0, rc.stderr[-2000:]
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

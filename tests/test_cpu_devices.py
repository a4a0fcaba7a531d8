"""``cpu_devices``: how many CPU devices a run splits its population over, and who decides."""

from __future__ import annotations

import os

import jax
import pytest
from conftest import TINY, run_cli

from evolopt import cpu_devices
from evolopt.registry import ConfigError


@pytest.mark.parametrize(
    "populations, cores, expected",
    [
        ([16], 2, 2),  # the default population on a 2-core laptop
        ([16], 8, 8),  # 2 members per device
        ([16], 6, 4),  # 16 = 2 x 4 x 2: the most that split it evenly
        ([32], 64, 16),  # never more than one antithetic pair per device
        ([6], 2, 1),  # 6 = 2 x 3: not over 2
        ([6], 4, 3),
        ([16, 24], 8, 4),  # a sweep: a count that splits every population
        ([8], 1, 1),
    ],
)
def test_auto_is_the_most_devices_that_split_the_population_evenly(populations, cores, expected):
    assert cpu_devices.resolve("auto", populations, cores) == expected
    assert all(n % (2 * expected) == 0 for n in populations)


def test_a_number_or_null_is_taken_as_given():
    assert cpu_devices.resolve(3, [6], 2) == 3  # more than the cores: the user's choice
    assert cpu_devices.resolve(None, [16], 8) is None


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "many"])
def test_bad_counts_are_one_line_errors(bad):
    with pytest.raises(ConfigError, match="valid choices: auto, a whole number >= 1, null"):
        cpu_devices.check(bad)


def test_a_started_backend_keeps_its_devices():
    jax.devices()  # this test process's backend has started
    assert cpu_devices.configure("auto", [16]) is None
    have = jax.local_device_count("cpu")
    assert cpu_devices.configure(have, [16]) is None
    with pytest.raises(ConfigError, match=f"started with {have} device"):
        cpu_devices.configure(have + 1, [16])


def devices_line(result) -> str:
    assert result.returncode == 0, result.stderr[-2000:]
    return next(line for line in result.stderr.splitlines() if "device(s)" in line)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_auto_follows_the_cores_the_command_may_use(tmp_path):
    """On two cores, two devices (population 8 would split over up to 4; JAX alone gives one). A number
    taken as given, and a count in XLA_FLAGS winning over auto: tests/test_sharding.py."""
    args = [*TINY, "generations=1", "evaluation.every=10", f"run_dir={tmp_path / 'a'}"]
    on_two_cores = (  # as `taskset -c 0,1 python -m evolopt.train ...` (no fork of this JAX process)
        "import os, runpy, sys; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2]); "
        "sys.argv = ['evolopt.train', *sys.argv[1:]]; runpy.run_module('evolopt.train', run_name='__main__')"
    )
    result = run_cli("-c", on_two_cores, *args, module=None, env={"XLA_FLAGS": ""})
    expected = min(2, len(os.sched_getaffinity(0)))
    assert f"on {expected} cpu device(s)" in devices_line(result)


def test_the_command_line_gives_the_count_and_every_population(monkeypatch):
    monkeypatch.setattr(cpu_devices, "configure", lambda value, populations: (value, list(populations)))
    read = cpu_devices.configure_from_overrides
    assert read([]) == ("auto", [16])  # config.yaml's defaults
    assert read(["population_size=16,24", "seed=1"]) == ("auto", [16, 24])  # a sweep: every value
    assert read(["population_size=range(8,24,8)", "cpu_devices=3"]) == (3, [8, 16])
    assert read(["cpu_devices=null"]) == (None, [16])
    with pytest.raises(ConfigError, match="cpu_devices cannot be swept"):
        read(["cpu_devices=1,2"])

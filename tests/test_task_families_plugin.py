"""The plug-in example: a user's task family module, used through the real CLI."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_plugin_task_family_meta_trains_through_the_cli(tmp_path):
    run_dir = tmp_path / "plugin_run"
    result = run_cli(
        "plugins=[tests.plugin_example.my_tasks]",
        "task_family=my_linear_regression",
        "task_family.dim=4",
        "generations=2",
        "population_size=4",
        "tasks_per_member=1",
        "unroll.truncation_length=5",
        "unroll.min_length=5",
        "unroll.max_length=5",
        "evaluation.steps=5",
        "evaluation.num_tasks=2",
        "progress=false",
        f"run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in rows if "fitness/mean" in r] == [1, 2]
    assert "my_linear_regression" in (run_dir / "config.yaml").read_text()

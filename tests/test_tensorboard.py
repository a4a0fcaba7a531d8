"""The real `tensorboard --logdir` server serves a run's scalars over its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from evolopt.distributed import free_local_port

TAGS = [
    "fitness/mean",
    "fitness/min",
    "fitness/max",
    "meta_loss/mean_theta",
    "theta/norm",
    "theta/update_norm",
    "speed/generations_per_s",
    "speed/member_steps_per_s",
]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_tensorboard_server_reads_back_run_scalars(tiny_run):
    port = free_local_port()
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or "tensorboard"
    proc = subprocess.Popen(
        [exe, "--logdir", str(tiny_run), "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline:  # the server needs a moment to start and load events
            try:
                tags = get_json(f"{base}/data/plugin/scalars/tags")
                if "tb" in tags and set(TAGS) <= set(tags["tb"]):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert "tb" in tags and set(TAGS) <= set(tags["tb"]), tags
        query = urllib.parse.urlencode({"run": "tb", "tag": "fitness/mean"})
        points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [wall_time, step, value]
        rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
        expected = {r["generation"]: r["fitness/mean"] for r in rows if "fitness/mean" in r}
        assert {p[1]: p[2] for p in points}.keys() == expected.keys()
        for _, step, value in points:
            assert abs(value - expected[step]) < 1e-6
    finally:
        proc.terminate()
        proc.wait(timeout=20)

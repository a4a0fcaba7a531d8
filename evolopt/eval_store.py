"""One evaluated task on disk, so an interrupted evaluation keeps what it did.

``<out>/tasks/<task>.npz`` holds the task's :class:`~evolopt.eval_report.Result`: its
numbers and grid as a JSON header, its curves as arrays (read with
``allow_pickle=False``), and the protocol it was measured under (with the storage
``format`` and the tuning ``score``). A stored task is reused only under the same
protocol. Written atomically (temp file + rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from evolopt.eval_report import Result

HEADER = "__result__"


def task_path(out: Path, task: str) -> Path:
    return Path(out) / "tasks" / f"{task}.npz"


def save_result(out: Path, result: Result, protocol: dict) -> Path:
    """Write ``result`` under ``out/tasks/`` (atomic)."""
    path = task_path(out, result.task)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(Result) if f.name != "curves"}
    names = list(result.curves)
    header = {"protocol": protocol, "fields": fields, "curves": names}
    arrays = {f"c{i}": np.asarray(result.curves[n]) for i, n in enumerate(names)}
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_result(out: Path, task: str, protocol: dict) -> Result | None:
    """The stored result of ``task`` if one was measured under ``protocol``, else None."""
    path = task_path(out, task)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(data[HEADER].tobytes().decode())
            curves = {n: data[f"c{i}"] for i, n in enumerate(header["curves"])}
    except (OSError, ValueError, KeyError, EOFError):  # a damaged file: measure the task again
        return None
    if header.get("protocol") != protocol:
        return None
    fields = header["fields"]
    fields["grid"] = {k: [tuple(row) for row in v] for k, v in fields["grid"].items()}
    return Result(**fields, curves=curves)


def stored_protocol(out: Path) -> dict | None:
    """The protocol of any task stored under ``out`` (None if none)."""
    for path in sorted((Path(out) / "tasks").glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                return json.loads(data[HEADER].tobytes().decode())["protocol"]
        except (OSError, ValueError, KeyError, EOFError):
            continue
    return None

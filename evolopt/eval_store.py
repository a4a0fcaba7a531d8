"""One evaluated task on disk, so an interrupted evaluation keeps what it did.

``<out>/tasks/<task>.npz`` holds the task's :class:`~evolopt.eval_report.Result`: its
numbers and grid as a JSON header, its curves as arrays (read with
``allow_pickle=False``), and the protocol it was measured under (with the storage
``format``, the tuning ``score`` and, under ``task``, the task's definition: name,
family, options, steps). A stored task is reused only under the same protocol. Written
atomically (temp file + rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from evolopt.eval_report import Result

HEADER = "__result__"


def task_definition(task: Any) -> dict:
    """What a suite task is, as stored (JSON types): ``{"name", "family", "options", "steps"}``."""
    definition = {"name": task.name, "family": task.family, "options": task.options, "steps": task.steps}
    return json.loads(json.dumps(definition))


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


def read_stored(path: Path) -> tuple[dict, Result]:
    """The protocol and result stored at ``path``; ValueError (or OSError) naming what is wrong if it is
    not a readable stored task."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError("not an .npz archive") from None
    try:
        with data:
            header = json.loads(data[HEADER].tobytes().decode())
            curves = {n: data[f"c{i}"] for i, n in enumerate(header["curves"])}
        fields = dict(header["fields"])
        fields["grid"] = {k: [tuple(row) for row in v] for k, v in fields["grid"].items()}
        return with_defaults(header["protocol"]), Result(**fields, curves=curves)
    except KeyError as e:
        raise ValueError(f"no {e} in it") from None
    except (TypeError, AttributeError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


# Protocol keys added within a format, at the value every store written before them was measured under.
PROTOCOL_DEFAULTS = {"first_seed": 0}


def with_defaults(protocol: dict) -> dict:
    """A stored protocol with the keys it was written without (``PROTOCOL_DEFAULTS``) at their defaults."""
    return {**PROTOCOL_DEFAULTS, **protocol}


def same_protocol(stored: dict, protocol: dict) -> bool:
    """``stored == protocol``; a task stored before task definitions were recorded (no ``task`` key) is
    compared without it (its suite name stood for it)."""
    if "task" not in stored:
        protocol = {k: v for k, v in protocol.items() if k != "task"}
    return stored == protocol


def load_result(out: Path, task: str, protocol: dict) -> Result | None:
    """The stored result of ``task`` if one was measured under ``protocol``, else None."""
    path = task_path(out, task)
    if not path.is_file():
        return None
    try:
        stored, result = read_stored(path)
    except (OSError, ValueError):  # a damaged file: measure the task again
        return None
    return result if same_protocol(stored, protocol) else None


def stored_protocol(out: Path) -> dict | None:
    """The protocol of any task stored under ``out`` (None if none)."""
    for path in sorted((Path(out) / "tasks").glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                return with_defaults(json.loads(data[HEADER].tobytes().decode())["protocol"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue
    return None

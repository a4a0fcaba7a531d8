"""A candidate's evaluation against its start's (and the tuned baselines'), task by task.

    python experiments/ns_input/vs_start.py CANDIDATE_EVAL_DIR START_EVAL_DIR [> table.md]

Both directories are `evolopt-evaluate` outputs on the same suite. Each optimizer is at its own
tuned rate (lowest smoothed final training loss over the grid). Per task: candidate / start for the
final training loss, the mean training loss over the run (mean of the tuned curve over steps and
seeds) and the final validation (test) loss; then the candidate's mean-over-run training loss over
each tuned baseline's (adam, adamw, sgdm, muon where present) and over the best of them.
Ratios < 1: the candidate is better. Summary rows: wins (ratio < 1) and the geometric mean.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

BASELINES = ("adam", "adamw", "sgdm", "muon")


def read(eval_dir: Path) -> dict[str, dict]:
    """``task -> {train, valid, mean, baselines: name -> mean}`` from results.csv and the stored curves."""
    out = {}
    with open(eval_dir / "results.csv") as f:
        for row in csv.DictReader(f):
            task, curves = row["task"], {}
            stored = eval_dir / "tasks" / f"{task}.npz"  # not in git: a fresh clone compares with the start only
            if stored.is_file():
                with np.load(stored, allow_pickle=False) as data:
                    names = json.loads(data["__result__"].tobytes().decode())["curves"]
                    curves = {n: data[f"c{i}"] for i, n in enumerate(names)}
            base = {n.split(" ")[0]: float(np.mean(c)) for n, c in curves.items() if n.split(" ")[0] in BASELINES}
            if row.get("candidate_mean"):
                mean = float(row["candidate_mean"])
            else:
                mean = float(np.mean(next(c for n, c in curves.items() if n.endswith("tuned)"))))
            out[task] = {
                "train": float(row["candidate_train"]),
                "valid": float(row["candidate_valid"]),
                "mean": mean,
                "baselines": base,
            }
    return out


def geo(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def table(cand: dict, start: dict) -> str:
    tasks = [t for t in cand if t in start]
    names = [b for b in BASELINES if all(b in cand[t]["baselines"] for t in tasks)]
    head = ["task", "train final / start", "train mean / start", "valid / start"]
    head += [f"mean / {b}" for b in names] + (["mean / best baseline"] if names else [])
    cols: list[list[float]] = [[] for _ in head[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        c, s = cand[t], start[t]
        vals = [c["train"] / s["train"], c["mean"] / s["mean"], c["valid"] / s["valid"]]
        vals += [c["mean"] / c["baselines"][b] for b in names]
        if names:
            vals.append(c["mean"] / min(c["baselines"][b] for b in names))
        for col, v in zip(cols, vals):
            col.append(v)
        lines.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    lines.append("| wins (< 1) | " + " | ".join(f"{sum(v < 1 for v in col)}/{len(col)}" for col in cols) + " |")
    lines.append("| geo-mean | " + " | ".join(f"{geo(col):.3f}" for col in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(read(Path(sys.argv[1])), read(Path(sys.argv[2]))))

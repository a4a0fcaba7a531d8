"""Side-by-side held-out results of several evaluations, against the best tuned baseline and Adam alone.

    python experiments/celo2_cpu/compare.py LABEL=EVAL_DIR[+EVAL_DIR...] [LABEL=...]

Reads each evaluation's ``lr_grid.csv`` (every rate's score; the scores the tuning chose
from) and prints a markdown table: per task the candidate's best score divided by the best
tuned baseline's, and by tuned Adam's alone, then wins / within 10% / IQM per column. With
``DIR1+DIR2``, the tasks DIR2 holds replace DIR1's (a re-run of some tasks).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from evolopt.eval_report import iqm

BASELINES = ("adam", "adamw", "sgdm", "muon", "sgd")  # muon: a default baseline since score= (format 2)


def best_scores(grid_csv: Path) -> dict[str, dict[str, float]]:
    """``task -> optimizer -> lowest final train score over its rates``."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with open(grid_csv) as f:
        for row in csv.DictReader(f):
            score = float(row["final_train"])
            cur = out[row["task"]].get(row["optimizer"], float("inf"))
            out[row["task"]][row["optimizer"]] = min(cur, score)
    return out


def ratios(dirs: str) -> dict[str, tuple[float, float]]:
    """``task -> (candidate / best baseline, candidate / adam)`` from ``DIR1+DIR2+...``."""
    scores: dict[str, dict[str, float]] = {}
    for d in dirs.split("+"):
        scores.update(best_scores(Path(d) / "lr_grid.csv"))
    out = {}
    for task, by_name in scores.items():
        cand = [v for k, v in by_name.items() if k not in BASELINES]
        best = min(v for k, v in by_name.items() if k in BASELINES)
        out[task] = (cand[0] / best, cand[0] / by_name["adam"])
    return out


def summary(values: list[float]) -> str:
    wins, close = sum(v < 1 for v in values), sum(1 <= v <= 1.1 for v in values)
    return f"{wins}/{len(values)} (+{close}), IQM {iqm(values):.2f}"


def main(argv: list[str]) -> None:
    cols = [(label, ratios(dirs)) for label, dirs in (a.split("=", 1) for a in argv)]
    tasks = list(cols[0][1])
    print("| task | " + " | ".join(f"{label}: best / adam" for label, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for t in tasks:
        print(f"| {t} | " + " | ".join(f"{c[t][0]:.3g} / {c[t][1]:.3g}" for _, c in cols) + " |")
    print(
        "| wins (+ within 10%), IQM | "
        + " | ".join(f"{summary([c[t][0] for t in tasks])} / {summary([c[t][1] for t in tasks])}" for _, c in cols)
        + " |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

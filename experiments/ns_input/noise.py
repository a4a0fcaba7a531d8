"""The evaluation's own noise: one theta under disjoint evaluation seeds, and candidates read against it (round 21).

    python experiments/ns_input/noise.py NULL_A NULL_B [NULL_C ...] [--vs CANDIDATE_DIR ...] [> table.md]

NULL_*: `evolopt-evaluate` outputs of the same theta on the same suite under disjoint draws
(`first_seed=0, 2, 4`, `seeds=2`); NULL_A is the draw every candidate was evaluated under. Per task
and score (final train, mean train, test), every pair of null draws gives a ratio of the theta to
itself: the null distribution of "candidate / start". A task's noise band is
``exp(max |log ratio|)`` over its pairs. Each candidate (same suite, draw A) is then divided by
NULL_A: ``+`` marks a ratio above the band (worse beyond noise), ``-`` one below ``1 / band``
(better beyond noise). Summary rows count, per null pair, the tasks the issue's rule would call
"worse" (ratio > 1) though nothing changed.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from vs_start import read  # noqa: E402

SCORES = (("train", "final train"), ("mean", "mean train"), ("valid", "test"))


def bands(nulls: list[dict]) -> tuple[dict, dict]:
    """``(pairs, band)``: per (task, score) the null ratios of every later draw over every earlier one, and the band."""
    pairs, band = {}, {}
    for task in nulls[0]:
        for key, _ in SCORES:
            rs = [b[task][key] / a[task][key] for a, b in itertools.combinations(nulls, 2)]
            pairs[task, key] = rs
            band[task, key] = math.exp(max(abs(math.log(r)) for r in rs))
    return pairs, band


def null_table(nulls: list[dict], names: list[str], pairs: dict, band: dict) -> str:
    labels = [f"{b}/{a}" for a, b in itertools.combinations(names, 2)]
    head = ["task"] + [f"{label} {k}" for _, k in SCORES for label in labels] + [f"band {k}" for _, k in SCORES]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in nulls[0]:
        cells = [f"{r:.3f}" for key, _ in SCORES for r in pairs[task, key]]
        rows.append(f"| {task} | " + " | ".join(cells + [f"{band[task, key]:.3f}" for key, _ in SCORES]) + " |")
    worse = [
        "/".join(str(sum(pairs[t, key][i] > 1 for t in nulls[0])) for i in range(len(labels))) for key, _ in SCORES
    ]
    rows.append(
        f"| 'worse' (> 1) per pair, of {len(nulls[0])} | "
        + " | ".join(f"{w} ({k})" for w, (_, k) in zip(worse, SCORES))
        + " |"
    )
    return "\n".join(rows)


def candidate_table(cands: dict[str, dict], start: dict, band: dict) -> str:
    head = ["candidate"] + [f"{k}: >1 / beyond noise worse / beyond noise better" for _, k in SCORES]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    detail = []
    for name, cand in cands.items():
        cells = []
        for key, _ in SCORES:
            rs = {t: cand[t][key] / start[t][key] for t in cand if t in start}
            worse = sum(r > 1 for r in rs.values())
            beyond = [t for t, r in rs.items() if r > band[t, key]]
            better = [t for t, r in rs.items() if r < 1 / band[t, key]]
            cells.append(f"{worse}/{len(rs)} / {len(beyond)} / {len(better)}")
            marks = ", ".join(f"{t} {r:.3f}{'+' if t in beyond else '-' if t in better else ''}" for t, r in rs.items())
            detail.append(f"- `{name}` {key}: {marks}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows + [""] + detail)


def main(argv: list[str]) -> None:
    split = argv.index("--vs") if "--vs" in argv else len(argv)
    null_dirs, cand_dirs = [Path(a) for a in argv[:split]], [Path(a) for a in argv[split + 1 :]]
    if len(null_dirs) < 2:
        sys.exit("usage: noise.py NULL_A NULL_B [NULL_C ...] [--vs CANDIDATE_DIR ...]")
    nulls = [read(d) for d in null_dirs]
    tasks = [t for t in nulls[0] if all(t in n for n in nulls)]
    nulls = [{t: n[t] for t in tasks} for n in nulls]
    names = [chr(ord("A") + i) for i in range(len(nulls))]
    pairs, band = bands(nulls)
    print(null_table(nulls, names, pairs, band))
    if cand_dirs:
        print()
        print(candidate_table({d.name: read(d) for d in cand_dirs}, nulls[0], band))


if __name__ == "__main__":
    main(sys.argv[1:])

"""How much of a run's move away from the start do independent seeds share? (round 15)

    python experiments/ns_input/displacement.py

For rounds 10-14's final thetas, prints the cosine between displacements d = theta - theta_start of every pair of
runs, grouped by whether the pair shares its recipe and/or its seed, and |s|^2/|d|^2 over every run of shares 0.125
and 0.25 (rounds 12, 13, 16; 11, 18): with d = s + n (noise independent across seeds) the mean dot product of two
seeds' displacements estimates |s|^2.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from evolopt.export import _flatten, load_theta_file

HERE = Path(__file__).parent
START = HERE / "eval" / "start_adam_lr_mult1_conv_as_matrix.npz"  # the Muon start; options do not change theta
RUNS = [f"r{r}_seed{s}" for r, seeds in ((10, "01"), (11, "01"), (12, "01"), (13, "23"), (14, "01")) for s in seeds]
# every run of one recipe, for the shared part of its move (rounds 16 and 18 added seeds)
SHARES = {
    "0.125": ["r12_seed0", "r12_seed1", "r13_seed2", "r13_seed3", *(f"r16_seed{s}" for s in range(4, 8))],
    "0.25": ["r11_seed0", "r11_seed1", *(f"r18_seed{s}" for s in range(2, 8))],
}


def flat(path: Path) -> np.ndarray:
    leaves = _flatten(load_theta_file(path)[0])
    return np.concatenate([leaves[k].ravel() for k in sorted(leaves)]).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    start = flat(START)
    moves = {run: flat(HERE / "runs" / run / "theta.npz") - start for run in RUNS}
    groups: dict[str, list[float]] = {
        "same recipe, other seed": [],
        "other recipe, same seed": [],
        "other recipe, other seed": [],
    }
    for a, b in itertools.combinations(RUNS, 2):
        same_recipe, same_seed = a.split("_")[0] == b.split("_")[0], a.split("seed")[1] == b.split("seed")[1]
        key = "same recipe, other seed" if same_recipe else f"other recipe, {'same' if same_seed else 'other'} seed"
        groups[key].append(cosine(moves[a], moves[b]))
    print("| pairs of runs | n | mean cosine (min, max) |\n|---|---|---|")
    for key, values in groups.items():
        print(f"| {key} | {len(values)} | {np.mean(values):.3f} ({min(values):.3f}, {max(values):.3f}) |")
    for share, runs in SHARES.items():
        moves.update({run: flat(HERE / "runs" / run / "theta.npz") - start for run in runs if run not in moves})
        signal = np.mean([moves[a] @ moves[b] for a, b in itertools.combinations(runs, 2)])
        total = np.mean([moves[a] @ moves[a] for a in runs])
        print(f"valid_share={share} ({len(runs)} runs): |s|^2/|d|^2 = {signal / total:.3f}, |d| = {np.sqrt(total):.3f}")


if __name__ == "__main__":
    main()

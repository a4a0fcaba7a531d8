"""Do the validation suites predict held-out? Each candidate against the start on each suite.

    python experiments/ns_input/suite_agreement.py

For every candidate evaluated on `validation`, `validation2` and `heldout2` (same protocol; the start
is `celo2_ns_input:muon` with `adam_lr_mult=1`, LR-tuned), prints per suite: mean-training-loss wins
over the start and their geo-mean, and final-validation-loss tasks where the candidate is worse.
Nothing is selected with this table; it measures the selection suites.
"""

from __future__ import annotations

from pathlib import Path

from vs_start import geo, read

EVAL = Path(__file__).parent / "eval"
SUITES = ("validation", "validation2", "heldout2")
START = {s: f"{s}_start_adam_lr_mult1" for s in SUITES}
CANDIDATES = {  # candidate -> its evaluation directory per suite
    "round 1 (celo2-cpu then)": (
        "validation_pick_adam_lr_mult1",
        "validation2_round1_adam_lr_mult1",
        "heldout2_celo2-cpu_adam_lr_mult1",
    ),
    "random_r3_seed0": ("validation_random_r3_seed0", "validation2_random_r3_seed0", "heldout2_random_r3_seed0"),
    "r6_seed1 (celo2-cpu now)": ("validation_r6_seed1", "validation2_r6_seed1", "heldout2_r6_seed1"),
    "r7a_seed0": ("validation_r7a_seed0", "validation2_r7a_seed0", "heldout2_r7a_seed0"),
}


def summary(cand_dir: str, start_dir: str) -> str:
    cand, start = read(EVAL / cand_dir), read(EVAL / start_dir)
    ratios = [cand[t]["mean"] / start[t]["mean"] for t in cand]
    worse = sum(cand[t]["valid"] > start[t]["valid"] for t in cand)
    return f"{sum(r < 1 for r in ratios)}/{len(ratios)}, {geo(ratios):.3f}; worse valid {worse}/{len(ratios)}"


if __name__ == "__main__":
    print("| candidate | " + " | ".join(f"{s}: mean-train wins, geo-mean; valid worse" for s in SUITES) + " |")
    print("|---|" + "---|" * len(SUITES))
    for name, dirs in CANDIDATES.items():
        cells = [summary(d, START[s]) if (EVAL / d / "results.csv").is_file() else "-" for d, s in zip(dirs, SUITES)]
        print(f"| {name} | " + " | ".join(cells) + " |")

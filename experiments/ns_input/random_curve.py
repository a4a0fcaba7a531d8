"""The random-start curve (README.md, "From a random theta, as a curve"): the in-run objective against
wall minutes, and the held-out IQM (normalised mean training loss vs the best of tuned Adam and Muon) of the
generations evaluated on ``heldout2``, beside the Muon start's. Writes random_curve.png next to this file.

usage: python experiments/ns_input/random_curve.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from evolopt.eval_report import iqm  # noqa: E402

HERE = Path(__file__).parent
RUN, MUON_RUN = HERE / "runs/random_r7_seed0", HERE / "runs/r7a_seed0"
EVALS = {15: "heldout2_random_r7_gen15", 30: "heldout2_random_r7_gen30", 75: "heldout2_random_r7_gen75"}
START_EVAL = "heldout2_start_adam_lr_mult1"


def in_run(run: Path) -> list[tuple[int, float, float]]:
    """``(generation, wall minutes since generation 0, objective)`` of each in-run evaluation."""
    rows = [json.loads(line) for line in gzip.open(run / "metrics.jsonl.gz", "rt")]
    t0 = rows[0]["time"]
    return [
        (r["generation"], (r["time"] - t0) / 60, r["meta_loss/mean_theta"]) for r in rows if "meta_loss/mean_theta" in r
    ]


def heldout_iqm(name: str) -> float:
    tasks = json.loads((HERE / "eval" / name / "results.json").read_text())["tasks"]
    return iqm([t["normalized_loss"] for t in tasks])


def main() -> None:
    curve, muon = in_run(RUN), in_run(MUON_RUN)[0][2]
    minutes = {g: m for g, m, _ in curve}
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([m for _, m, _ in curve[1:]], [o for _, _, o in curve[1:]], "o-", label="from random")
    a.axhline(muon, color="k", ls="--", label="Muon start")
    a.set(xlabel="wall minutes (2 CPU cores)", ylabel="in-run objective (lower is better)", title="meta-training")
    a.legend()
    points = [(minutes[g], heldout_iqm(name)) for g, name in EVALS.items()]
    b.plot(*zip(*points), "o-", label="from random (gen 15, 30, 75)")
    b.axhline(heldout_iqm(START_EVAL), color="k", ls="--", label="Muon start (celo2_ns_input:muon)")
    b.axhline(1.0, color="grey", ls=":", label="best of tuned Adam, Muon")
    b.set(xlabel="wall minutes (2 CPU cores)", ylabel="heldout2 IQM normalised mean train loss", title="held-out")
    b.legend()
    fig.tight_layout()
    fig.savefig(HERE / "random_curve.png", dpi=100)
    print("\n".join(f"generation {g}: {m:.1f} min, heldout2 IQM {i:.3f}" for g, (m, i) in zip(EVALS, points)))
    print(f"Muon start: heldout2 IQM {heldout_iqm(START_EVAL):.3f}")


if __name__ == "__main__":
    main()

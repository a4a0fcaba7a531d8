"""The trade `unroll.valid_share` makes: training speed against test loss, on both suites.

    python experiments/ns_input/front.py [OUT.png]

For every candidate of rounds 10-17 (shares 0, 0.125, 0.1875, 0.25; single runs as dots, means of two
chains as squares, of four as diamonds, of eight as a plus; each against the start with
`adam_lr_mult=1`), prints and plots
* on `validation2`: the geo-mean of candidate / start mean training loss (x) and final validation
  loss (y), with the eligibility counts;
* on `heldout2` (only the candidates evaluated there): mean-train wins (x) and test-loss losses
  (y) out of 10, with issue 12's target region (>= 8 wins, <= 2 worse), and the shipped file
  (round 11's pick with `conv_as_matrix=true`) against the start with the same conv option.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from vs_start import geo, read  # noqa: E402

HERE = Path(__file__).parent / "eval"
SHARES = {"r10": 0.0, "r12": 0.125, "r13": 0.125, "r14": 0.1875, "r11": 0.25, "avg4": 0.125, "avg8": 0.125}
CANDIDATES = [f"{r}_seed{s}" for r in ("r10", "r11", "r12", "r14") for s in (0, 1)] + ["r13_seed2", "r13_seed3"]
CANDIDATES += [f"avg_{r}" for r in ("r10", "r11", "r12", "r13", "r14")] + ["avg4_0125", "avg4_0125_b", "avg8_0125"]


def share_and_marker(name: str) -> tuple[float, str]:
    """A candidate's valid_share, and its marker: one run, the mean of two chains, of four, of eight."""
    parts = name.split("_")
    if parts[0] == "avg":
        return SHARES[parts[1]], "s"
    return SHARES[parts[0]], {"avg4": "D", "avg8": "P"}.get(parts[0], "o")


def ratios(cand_dir: Path, start_dir: Path) -> dict[str, tuple[float, float]]:
    """Per task: candidate / start for mean training loss and for final validation (test) loss."""
    cand, start = read(cand_dir), read(start_dir)
    return {t: (cand[t]["mean"] / start[t]["mean"], cand[t]["valid"] / start[t]["valid"]) for t in cand if t in start}


def counts(r: dict[str, tuple[float, float]]) -> dict:
    """Mean-train wins, tasks with worse validation loss, and both geo-means."""
    mean, valid = [m for m, _ in r.values()], [v for _, v in r.values()]
    return {
        "n": len(r),
        "wins": sum(x < 1 for x in mean),
        "worse": sum(x > 1 for x in valid),
        "geo_mean": geo(mean),
        "geo_valid": geo(valid),
    }


def summary(name: str, suite: str) -> dict | None:
    cand_dir, start_dir = HERE / f"{suite}_{name}", HERE / f"{suite}_start_adam_lr_mult1"
    if not (cand_dir / "results.csv").is_file():
        return None
    return counts(ratios(cand_dir, start_dir))


def shipped_matched() -> dict:
    """`celo2-cpu` as shipped on `heldout2`: round 11's pick, with its conv task replaced by the shipped file's
    (`conv_as_matrix=true`) against the start with the same conv option."""
    r = ratios(HERE / "heldout2_r11_seed1", HERE / "heldout2_start_adam_lr_mult1")
    conv = ratios(HERE / "heldout2_celo2-cpu_r11_conv", HERE / "heldout2_start_conv_as_matrix")
    assert conv.keys() <= r.keys(), conv.keys()
    return counts({**r, **conv})


def main(out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {0.0: "tab:red", 0.125: "tab:purple", 0.1875: "tab:green", 0.25: "tab:blue"}
    print("| candidate | share | validation2: wins, geo-mean; worse, geo-mean | heldout2: wins; test worse |")
    print("|---|---|---|---|")
    for name in CANDIDATES:
        share, marker = share_and_marker(name)
        v, h = summary(name, "validation2"), summary(name, "heldout2")
        if v is None:
            continue
        c = colors[share]
        left.scatter(v["geo_mean"], v["geo_valid"], color=c, marker=marker, label=f"valid_share={share}")
        left.annotate(name, (v["geo_mean"], v["geo_valid"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        held = f"{h['wins']}/{h['n']}; {h['worse']}/{h['n']}" if h else "not evaluated"
        if h:
            right.scatter(h["wins"], h["worse"], color=c, marker=marker, s=60)
            right.annotate(name, (h["wins"], h["worse"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        row = f"{v['wins']}/{v['n']}, {v['geo_mean']:.3f}; {v['worse']}/{v['n']}, {v['geo_valid']:.3f}"
        print(f"| `{name}` | {share} | {row} | {held} |")
    shipped = shipped_matched()
    right.scatter(shipped["wins"], shipped["worse"], marker="*", color="black", s=120, label="celo2-cpu as shipped")
    print(f"| `celo2-cpu` as shipped (matched conv option) | 0.25 | | {shipped['wins']}/10; {shipped['worse']}/10 |")
    handles = {lab: h for h, lab in zip(*left.get_legend_handles_labels())}
    left.legend(handles.values(), handles.keys(), fontsize=8)
    left.axhline(1, color="grey", lw=0.5)
    left.axvline(1, color="grey", lw=0.5)
    left.set(xlabel="mean training loss / start (geo-mean)", ylabel="final validation loss / start (geo-mean)")
    left.set_title("validation2 (lower-left is better; o 1 run, s/D/P mean of 2/4/8)", fontsize=10)
    right.fill_between([7.5, 10.5], -0.5, 2.5, color="green", alpha=0.15, label="issue 12's target")
    right.set(xlim=(-0.5, 10.5), ylim=(-0.5, 10), xlabel="mean training loss: wins vs start (of 10)")
    right.set(ylabel="test loss: worse than start (of 10)")
    right.set_title("heldout2 (evaluated picks only; per-tap convs)", fontsize=10)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "share_front.png")

"""The evaluation's per-task result, its summary statistics, and the markdown/CSV/PNG/TensorBoard report.

Per task, with ``c`` the candidate's and ``b`` the best tuned baseline's smoothed final
training loss (mean over seeds): normalised loss ``c / b`` (< 1: the candidate wins), and
speedup ``t* / T``, where ``t*`` is the first step at which the candidate's mean smoothed
curve is ``<= b`` and ``T`` the step budget (inf if never). Over tasks: win rate (share of
normalised losses < 1), the number within 10% (``1 <= c / b <= 1.1``) and the
interquartile mean (mean of the sorted values with ranks in ``[floor(n/4), ceil(3n/4))``). The same three
figures are also given against each baseline alone (its own best rate per task).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from evolopt.eval_grid import smooth


@dataclasses.dataclass
class Result:
    """One task. ``candidate_*`` is the candidate at its chosen rate ``candidate_lr`` (its own rate
    when not tuned); ``own_*`` the candidate at its own rate ``own_lr`` (NaN if it has none)."""

    task: str
    in_distribution: bool
    candidate_lr: float
    candidate_train: float
    candidate_valid: float
    baseline: str
    baseline_lr: float
    baseline_train: float
    baseline_valid: float
    normalized_loss: float
    speedup: float
    own_lr: float
    own_train: float
    own_valid: float
    own_normalized_loss: float
    own_speedup: float
    seconds: float
    tuned: bool
    curves: dict = dataclasses.field(repr=False)
    grid: dict = dataclasses.field(repr=False, default_factory=dict)  # name -> [(lr, train score, mean valid)]


FIELDS = [f.name for f in dataclasses.fields(Result) if f.name not in ("curves", "grid")]


def steps_to_reach(curve: np.ndarray, target: float) -> float:
    """1-based index of the first step with ``curve <= target``; inf if none."""
    hit = np.nonzero(curve <= target)[0]
    return float(hit[0] + 1) if len(hit) else math.inf


def iqm(values: list[float]) -> float:
    """Interquartile mean: the mean of the middle half of the sorted values."""
    v = np.sort(np.asarray(values, float))
    lo, hi = int(np.floor(0.25 * len(v))), int(np.ceil(0.75 * len(v)))
    return float(np.mean(v[lo:hi])) if hi > lo else float(np.mean(v))


def normalized(cand_mean: np.ndarray, base_final: float, steps: int) -> tuple[float, float]:
    """``(c / b, speedup)`` for the candidate's mean smoothed curve against the baseline's final ``b``."""
    ratio = float(cand_mean[-1]) / base_final if base_final > 0 else math.inf
    return ratio, steps_to_reach(cand_mean, base_final) / steps


def summary(norm: list[float], where: str) -> str:
    """One line: wins (< 1), within 10% (1 .. 1.1) and the IQM of the normalised losses ``norm``."""
    wins = sum(n < 1.0 for n in norm)
    close = sum(1.0 <= n <= 1.1 for n in norm)
    return (
        f"Win rate (normalised loss < 1) {where}: {wins}/{len(norm)}; within 10% (1..1.1): {close} more; "
        f"IQM normalised loss: {iqm(norm):.3f}."
    )


def per_baseline(results: list[Result], label: str) -> dict[str, list[float]]:
    """``name -> [candidate score / that baseline's best score, per task]`` for every tuned baseline
    (each baseline's best rate from its own grid, by the same criterion): "beats tuned Adam" is
    a claim about Adam alone, not about the best of several baselines."""
    names = [n for n in (results[0].grid if results else {}) if n != label]
    out = {}
    for name in names:
        best = [min(score for _, score, _ in r.grid[name]) for r in results]
        out[name] = [r.candidate_train / b if b > 0 else math.inf for r, b in zip(results, best)]
    return out


def write_report(results: list[Result], out: Path, label: str, suite: str, protocol: str) -> str:
    """Write ``results.md``, ``results.csv``, ``lr_grid.csv``, ``curves.png`` and ``tb/`` under ``out``.

    Returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in results:
            w.writerow([getattr(r, k) for k in FIELDS])
    with open(out / "lr_grid.csv", "w", newline="") as f:  # every rate's score: the tuning evidence
        w = csv.writer(f)
        w.writerow(["task", "optimizer", "lr", "final_train", "final_valid"])
        for r in results:
            for name, rows in r.grid.items():
                w.writerows([r.task, name, lr, train, valid] for lr, train, valid in rows)
    tuned = any(r.tuned for r in results)
    head = (
        "| task | in-dist | lr | train loss | valid loss | best baseline (lr) | its train | its valid "
        "| normalised loss | speedup |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if tuned:
        head += " at own lr: train | normalised |"
        rule += "---|---|"
    lines = [f"# {label} vs LR-tuned baselines on suite `{suite}`", "", protocol, "", head, rule]
    for r in results:
        row = (
            f"| {r.task} | {'yes' if r.in_distribution else 'no'} | {r.candidate_lr:.0e} | {r.candidate_train:.4f} | "
            f"{r.candidate_valid:.4f} | {r.baseline} ({r.baseline_lr:.0e}) | {r.baseline_train:.4f} | "
            f"{r.baseline_valid:.4f} | {r.normalized_loss:.3f} | {r.speedup:.2f} |"
        )
        if tuned:
            row += f" {r.own_train:.4f} | {r.own_normalized_loss:.3f} |"
        lines.append(row)
    rate = "the tuned learning rate" if tuned else "its own learning rate"
    where = f"at {rate}"
    lines += ["", summary([r.normalized_loss for r in results], where)]
    for name, norm in per_baseline(results, label).items():
        lines.append(summary(norm, f"against {name} alone ({rate.removeprefix('the ')} vs its best rate)"))
    if tuned:
        own = {f"{r.own_lr:.0e}" for r in results}
        chosen = collections.Counter(f"{r.candidate_lr:.0e}" for r in results)
        lines += [
            summary([r.own_normalized_loss for r in results], f"at its own learning rate ({', '.join(sorted(own))})"),
            "Chosen learning rates: "
            + ", ".join(f"{lr} x{n}" for lr, n in sorted(chosen.items(), key=lambda x: float(x[0])))
            + ".",
        ]
    lines += [
        "Normalised loss: candidate's final train loss / best tuned baseline's (< 1: candidate wins).",
        "Speedup: fraction of the baseline's steps the candidate needs to reach its final loss (< 1 is faster).",
        f"Wall time: {sum(r.seconds for r in results):.0f} s "
        f"({', '.join(f'{r.task} {r.seconds:.0f} s' for r in results)}).",
    ]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    plot_curves(results, out)
    write_tensorboard(results, out)
    return text


def plot_curves(results: list[Result], out: Path) -> None:
    """Mean smoothed training curves per task, one panel each, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results):
        for name, curves in r.curves.items():
            ax.plot(smooth(curves).mean(0), label=name, linestyle=":" if "own lr" in name else "-")
        ax.set_title(r.task)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def tb_tag(*parts: str) -> str:
    """A TensorBoard tag from free text (a path in an optimizer's name stays a tag, never a folder)."""
    return "/".join(re.sub(r"[^\w.,=()+-]+", "_", p).strip("_") for p in parts)


def write_tensorboard(results: list[Result], out: Path) -> None:
    """Every task's mean smoothed curves as scalars ``<task>/train_loss/<optimizer>`` (<= ~200 points each),
    all in one TensorBoard run under ``out/tb`` (``add_scalars`` would make a run, and a folder, per curve)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(out / "tb")) as w:
        for r in results:
            means = {name: smooth(c).mean(0) for name, c in r.curves.items()}
            length = len(next(iter(means.values())))
            for step in range(0, length, max(1, length // 200)):
                for name, m in means.items():
                    w.add_scalar(tb_tag(r.task, "train_loss", name), float(m[step]), step)

"""The evaluation's per-task result, its summary statistics, and the markdown/CSV/JSON/PNG/TensorBoard report.

Every optimizer at its chosen rate has three scores (means over seeds,
:mod:`evolopt.eval_grid`): ``final`` (smoothed final training loss), ``mean`` (mean
training loss over the run) and ``valid`` (final validation loss). The tuning score
``score`` (``mean`` or ``final``) picks each optimizer's rate and the headline.

Per task, with ``c`` the candidate's and ``b`` the best tuned baseline's tuning score:
normalised loss ``c / b`` (< 1: the candidate wins), and speedup ``t* / T``, where ``t*``
is the first step at which the candidate's mean smoothed curve is ``<= `` the best
baseline's final train loss and ``T`` the step budget (inf if never). Over tasks: win rate
(share of normalised losses < 1), the number within 10% (``1 <= c / b <= 1.1``) and the
interquartile mean (mean of the sorted values with ranks in ``[floor(n/4), ceil(3n/4))``).

Comparisons (:func:`comparisons`): against each baseline alone (at its own best rate by
``score``) and against the best of them (per task and per score, the lowest baseline
value), on each of the three scores: the ratios ``candidate / baseline``, their win count
and geometric mean ``exp(mean(log ratio))``. A task is flagged where the candidate wins on
the training score but loses on validation loss against a comparator (it fits the
training data better and generalises worse).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from evolopt.eval_grid import smooth
from evolopt.run_dir import atomic_write_text

# Of results.json and the stored task results: 1 (before score=) had no mean-train scores; 2 scored the test
# loss on one validation batch (unroll.final_valid_loss now averages FINAL_VALID_BATCHES of them).
FORMAT = 3
OLDER = {1: "without mean-train scores", 2: "its test losses on one validation batch"}
SCORE_NAMES = {"mean": "mean train loss", "final": "final train loss", "valid": "validation loss"}
BEST_OF = "best-of"


@dataclasses.dataclass
class Result:
    """One task. ``candidate_*`` is the candidate at its chosen rate ``candidate_lr`` (its own rate
    when not tuned); ``own_*`` the candidate at its own rate ``own_lr`` (NaN if it has none);
    ``baseline_*`` the best baseline by ``score``. ``*_train`` is the final train score, ``*_mean``
    the mean train score, ``*_valid`` the validation score; ``baselines`` maps every baseline to
    ``{"lr", "final", "mean", "valid"}`` at its chosen rate."""

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
    grid: dict = dataclasses.field(repr=False, default_factory=dict)  # name -> [(lr, final, mean, valid)]
    score: str = "final"
    candidate_mean: float = math.nan
    baseline_mean: float = math.nan
    own_mean: float = math.nan
    baselines: dict = dataclasses.field(repr=False, default_factory=dict)

    def candidate_scores(self) -> dict[str, float]:
        return {"final": self.candidate_train, "mean": self.candidate_mean, "valid": self.candidate_valid}


FIELDS = [f.name for f in dataclasses.fields(Result) if f.name not in ("curves", "grid", "baselines")]


def steps_to_reach(curve: np.ndarray, target: float) -> float:
    """1-based index of the first step with ``curve <= target``; inf if none."""
    hit = np.nonzero(curve <= target)[0]
    return float(hit[0] + 1) if len(hit) else math.inf


def iqm(values: list[float]) -> float:
    """Interquartile mean: the mean of the middle half of the sorted values."""
    v = np.sort(np.asarray(values, float))
    lo, hi = int(np.floor(0.25 * len(v))), int(np.ceil(0.75 * len(v)))
    return float(np.mean(v[lo:hi])) if hi > lo else float(np.mean(v))


def ratio(candidate: float, base: float) -> float:
    """``candidate / base``; 1 for equal values (e.g. both 0), inf where ``base <= 0`` < candidate."""
    if candidate == base:
        return 1.0
    return candidate / base if base > 0 else math.inf


def geo_mean(values: list[float]) -> float:
    """``exp(mean(log v))``: the geometric mean (inf if any value is inf, 0 if any is 0)."""
    v = np.asarray(values, float)
    if np.any(np.isinf(v)) or np.any(np.isnan(v)):
        return math.inf
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(v))))


def summary(norm: list[float], where: str) -> str:
    """One line: wins (< 1), within 10% (1 .. 1.1) and the IQM of the normalised losses ``norm``."""
    wins = sum(n < 1.0 for n in norm)
    close = sum(1.0 <= n <= 1.1 for n in norm)
    return (
        f"Win rate (normalised loss < 1) {where}: {wins}/{len(norm)}; within 10% (1..1.1): {close} more; "
        f"IQM normalised loss: {iqm(norm):.3f}."
    )


def comparisons(results: list[Result]) -> dict[str, dict[str, list[float]]]:
    """``comparator -> score -> [candidate / comparator per task]`` for every tuned baseline (each at
    its own best rate: "beats tuned Adam" is a claim about Adam alone) and ``best-of`` (per task and
    score, the lowest value of any baseline), on ``mean``, ``final`` and ``valid``."""
    names = list(results[0].baselines) if results else []
    out: dict[str, dict[str, list[float]]] = {n: {s: [] for s in SCORE_NAMES} for n in [*names, BEST_OF]}
    for r in results:
        cand = r.candidate_scores()
        for s in SCORE_NAMES:
            for n in names:
                out[n][s].append(ratio(cand[s], r.baselines[n][s]))
            out[BEST_OF][s].append(ratio(cand[s], min(r.baselines[n][s] for n in names)))
    return out


def overfit_flags(results: list[Result], comp: dict[str, dict[str, list[float]]]) -> dict[str, list[str]]:
    """``task -> [comparators]`` the candidate beats on its training score (``r.score``) but loses to on
    validation loss."""
    return {r.task: [n for n in comp if comp[n][r.score][i] < 1.0 < comp[n]["valid"][i]] for i, r in enumerate(results)}


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def write_report(results: list[Result], out: Path, label: str, suite: str, protocol: str) -> str:
    """Write ``results.md``, ``results.csv``, ``results.json``, ``lr_grid.csv``, ``curves.png`` and ``tb/``
    under ``out`` (each file atomically). Returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    comp = comparisons(results)
    flags = overfit_flags(results, comp)
    atomic_write_text(out / "results.csv", _csv([FIELDS, *([getattr(r, k) for k in FIELDS] for r in results)]))
    grid_rows = [[r.task, n, *row] for r in results for n, rows in r.grid.items() for row in rows]
    header = ["task", "optimizer", "lr", "final_train", "mean_train", "final_valid"]
    atomic_write_text(out / "lr_grid.csv", _csv([header, *grid_rows]))  # every rate's scores: the tuning evidence
    text = markdown(results, comp, flags, label, suite, protocol)
    atomic_write_text(out / "results.md", text)
    report = _finite_or_null(report_json(results, comp, flags, label, suite, protocol))
    atomic_write_text(out / "results.json", json.dumps(report, indent=1, allow_nan=False))
    plot_curves(results, out)
    write_tensorboard(results, comp, out, text)
    return text


def _finite_or_null(x):
    """Strict JSON: every NaN/inf (a diverged optimizer, an undefined ratio) becomes null."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_json(results: list[Result], comp: dict, flags: dict, label: str, suite: str, protocol: str) -> dict:
    """The report as data: ``format``, the tuning ``score``, every task's fields (and each baseline's scores),
    and per comparator and score the ratios, wins and geometric mean (null where not finite)."""
    return {
        "format": FORMAT,
        "optimizer": label,
        "suite": suite,
        "score": results[0].score if results else None,
        "protocol": protocol,
        "tasks": [
            {**{k: getattr(r, k) for k in FIELDS}, "baselines": r.baselines, "wins_train_loses_valid": flags[r.task]}
            for r in results
        ],
        "comparisons": {
            n: {
                s: {"ratios": v, "wins": sum(x < 1.0 for x in v), "tasks": len(v), "geo_mean": geo_mean(v)}
                for s, v in by_score.items()
            }
            for n, by_score in comp.items()
        },
    }


def comparison_table(comp: dict, score: str) -> list[str]:
    """Markdown lines: per comparator, wins / tasks and the geometric-mean ratio on each score."""
    lines = [
        f"Against each baseline (at its best rate by {SCORE_NAMES[score]}) and the best of them per task and "
        "score: wins (candidate lower) / tasks, and the geometric mean of candidate / baseline "
        "(< 1: candidate better).",
        "",
        "| against | " + " | ".join(f"{SCORE_NAMES[s]}: wins | geo-mean" for s in SCORE_NAMES) + " |",
        "|---" * (1 + 2 * len(SCORE_NAMES)) + "|",
    ]
    for name, by_score in comp.items():
        cells = [f"{sum(x < 1.0 for x in v)}/{len(v)} | {geo_mean(v):.3f}" for v in by_score.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: list[Result], comp: dict, flags: dict, label: str, suite: str, protocol: str) -> str:
    """results.md: per task the three scores of the candidate and of the best baseline, then the comparisons."""
    score = results[0].score if results else "final"
    tuned = any(r.tuned for r in results)
    head = (
        "| task | in-dist | lr | final train | mean train | valid | best baseline (lr) | its final | its mean "
        f"| its valid | normalised ({score}) | valid ratio | speedup | wins train, loses valid vs |"
    )
    rule = "|---" * 14 + "|"
    if tuned:
        head += f" at own lr: {score} | normalised |"
        rule += "---|---|"
    lines = [f"# {label} vs LR-tuned baselines on suite `{suite}`", "", protocol, "", head, rule]
    for i, r in enumerate(results):
        own_score = r.own_mean if score == "mean" else r.own_train
        lines.append(
            f"| {r.task} | {'yes' if r.in_distribution else 'no'} | {r.candidate_lr:.0e} | {r.candidate_train:.4f} | "
            f"{r.candidate_mean:.4f} | {r.candidate_valid:.4f} | {r.baseline} ({r.baseline_lr:.0e}) | "
            f"{r.baseline_train:.4f} | {r.baseline_mean:.4f} | {r.baseline_valid:.4f} | {r.normalized_loss:.3f} | "
            f"{comp[BEST_OF]['valid'][i]:.3f} | {r.speedup:.2f} | {', '.join(flags[r.task]) or '-'} |"
            + (f" {own_score:.4f} | {r.own_normalized_loss:.3f} |" if tuned else "")
        )
    rate = "the tuned learning rate" if tuned else "its own learning rate"
    lines += ["", summary([r.normalized_loss for r in results], f"at {rate}, on {SCORE_NAMES[score]}")]
    if tuned:
        own = {f"{r.own_lr:.0e}" for r in results}
        chosen = collections.Counter(f"{r.candidate_lr:.0e}" for r in results)
        lines += [
            summary([r.own_normalized_loss for r in results], f"at its own learning rate ({', '.join(sorted(own))})"),
            "Chosen learning rates: "
            + ", ".join(f"{lr} x{n}" for lr, n in sorted(chosen.items(), key=lambda x: float(x[0])))
            + ".",
        ]
    flagged = [t for t in flags if BEST_OF in flags[t]]
    lines += [
        f"Wins on {SCORE_NAMES[score]} but loses on validation loss against the best baseline: "
        f"{len(flagged)}/{len(results)}" + (f" ({', '.join(flagged)})." if flagged else "."),
        "",
        *comparison_table(comp, score),
        "",
        f"Normalised loss: candidate's {SCORE_NAMES[score]} / best tuned baseline's (< 1: candidate wins); "
        "valid ratio: the same for validation loss against the best baseline on it.",
        "Final train loss: smoothed over the last 5% of steps; mean train loss: over all steps (area under the "
        "curve / steps); valid: final validation loss; all means over seeds.",
        "Speedup: fraction of the steps the candidate needs to reach the best baseline's final train loss (< 1 is "
        "faster).",
        f"Wall time: {sum(r.seconds for r in results):.0f} s "
        f"({', '.join(f'{r.task} {r.seconds:.0f} s' for r in results)}).",
    ]
    return "\n".join(lines) + "\n"


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


def write_tensorboard(results: list[Result], comp: dict, out: Path, text: str) -> None:
    """Every task's mean smoothed curves as scalars ``<task>/train_loss/<optimizer>`` (<= ~200 points each),
    the ratios ``<task>/ratio/<comparator>/<score>``, the summaries ``summary/<comparator>/<score>/{wins,
    geo_mean}`` and the markdown report as text, all in one TensorBoard run under ``out/tb`` (``add_scalars``
    would make a run, and a folder, per curve)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(out / "tb")) as w:
        w.add_text("report", text, 0)
        for i, r in enumerate(results):
            means = {name: smooth(c).mean(0) for name, c in r.curves.items()}
            length = len(next(iter(means.values())))
            for step in range(0, length, max(1, length // 200)):
                for name, m in means.items():
                    w.add_scalar(tb_tag(r.task, "train_loss", name), float(m[step]), step)
            for name, by_score in comp.items():
                for s, v in by_score.items():
                    w.add_scalar(tb_tag(r.task, "ratio", name, s), float(v[i]), 0)
        for name, by_score in comp.items():
            for s, v in by_score.items():
                w.add_scalar(tb_tag("summary", name, s, "wins"), float(sum(x < 1.0 for x in v)), 0)
                w.add_scalar(tb_tag("summary", name, s, "geo_mean"), geo_mean(v), 0)

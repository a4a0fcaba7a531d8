"""Where a run's numbers go: TensorBoard events (no TensorFlow), metrics.jsonl, a progress bar, PNGs."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from evolopt.progress import ProgressReporter
from evolopt.tb import write_curves


class RunLogger:
    """Scalars to TensorBoard and to ``metrics.jsonl`` (one JSON object per generation).

    ``write=False`` (every process but 0 of a distributed run) keeps the interface and writes nothing.
    """

    def __init__(self, run_dir: Path, total: int, start: int, progress: str | bool = "auto", write: bool = True):
        self.run_dir, self.write = run_dir, write
        self.writer = SummaryWriter(str(run_dir / "tb"), flush_secs=5) if write else None
        self.jsonl = run_dir / "metrics.jsonl"
        if write:
            _truncate_jsonl(self.jsonl, start)  # a resumed run rewrites the generations after its checkpoint
        show = write and (sys.stderr.isatty() if progress == "auto" else bool(progress))
        self.bar = tqdm(total=total, initial=start, desc="meta-train", unit="gen", disable=not show, dynamic_ncols=True)
        self.last_time = time.perf_counter()
        self.reporter = ProgressReporter(total, start) if write and not show else None  # lines off a terminal

    def note(self, message: str) -> None:
        """A line for the person watching (above the bar)."""
        if self.write:
            self.bar.write(message, file=sys.stderr)

    def scalars(self, generation: int, values: dict[str, float]) -> None:
        if not self.write:
            return
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, generation)

    def record(self, generation: int, metrics: dict[str, float]) -> None:
        """To TensorBoard and as one line of metrics.jsonl."""
        if not self.write:
            return
        self.scalars(generation, metrics)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({"generation": generation, "time": round(time.time(), 3), **metrics}) + "\n")

    def generation(self, generation: int, metrics: dict[str, float]) -> None:
        self.record(generation, metrics)
        self.bar.set_postfix(best=f"{metrics['fitness/min']:.4f}", mean=f"{metrics['fitness/mean']:.4f}")
        self.bar.update(1)
        if self.reporter is not None:
            self.reporter.update(generation, metrics)

    def curves(self, generation: int, curves: dict[str, np.ndarray]) -> None:
        """Loss-vs-inner-step curves of one evaluation, overlaid in one TensorBoard chart."""
        if not self.write:
            return
        write_curves(self.writer, generation, curves)  # tags of this run, not a run per curve

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _truncate_jsonl(path: Path, start: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["generation"] <= start]
    path.write_text("".join(line + "\n" for line in keep))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def plot_run(run_dir: Path) -> Path | None:
    """``meta_training.png``: population fitness and the mean theta's meta-loss over generations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    if not rows:
        return None
    pop = [r for r in rows if "fitness/mean" in r]
    gens = [r["generation"] for r in pop]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(gens, [r["fitness/mean"] for r in pop], label="population fitness (mean)", alpha=0.6)
    ax.fill_between(gens, [r["fitness/min"] for r in pop], [r["fitness/max"] for r in pop], alpha=0.15)
    pts = [
        (r["generation"], r["meta_loss/mean_theta"])
        for r in rows
        if not math.isnan(r.get("meta_loss/mean_theta", math.nan))
    ]
    if pts:
        ax.plot(*zip(*pts), "o-", label="meta-loss of mean theta")
    adam = [(r["generation"], r["meta_loss/adam"]) for r in rows if "meta_loss/adam" in r]
    if adam:  # a line, not a constant: a resumed run may evaluate on other tasks than before
        ax.plot(*zip(*adam), color="gray", ls="--", label="Adam (same tasks)", drawstyle="steps-post")
    ax.set_xlabel("generation")
    ax.set_ylabel("normalised training loss")
    ax.legend()
    fig.tight_layout()
    out = run_dir / "meta_training.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

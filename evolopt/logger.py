"""Where a run's numbers go: TensorBoard events (no TensorFlow), metrics.jsonl, a progress bar, PNGs."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2
from tensorboardX.summary import scalar as scalar_summary
from tensorboardX.summary import text as text_summary
from tqdm import tqdm

from evolopt.progress import ProgressReporter
from evolopt.run_dir import TMP_PREFIX, atomic_write_text, fault
from evolopt.summary import LOSS_NAMES

logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)  # NaN metrics are expected: a diverged member


class RunLogger:
    """Scalars to TensorBoard and to ``metrics.jsonl`` (one JSON object per generation).

    ``write=False`` (every process but 0 of a distributed run) keeps the interface and writes nothing.
    A run starting at generation ``start`` first recovers both from a kill: see :func:`recover`.
    """

    def __init__(self, run_dir: Path, total: int, start: int, progress: str | bool = "auto", write: bool = True):
        self.run_dir, self.write = run_dir, write
        self.jsonl = run_dir / "metrics.jsonl"
        if write:
            recover(run_dir, start)
        self.writer = EventFile(run_dir / "tb") if write else None
        show = write and (sys.stderr.isatty() if progress == "auto" else bool(progress))
        self.bar = tqdm(total=total, initial=start, desc="meta-train", unit="gen", disable=not show, dynamic_ncols=True)
        self.last_time = time.perf_counter()
        self.reporter = ProgressReporter(total, start) if write and not show else None  # lines off a terminal

    def note(self, message: str) -> None:
        """A line for the person watching (above the bar)."""
        if self.write:
            self.bar.write(message, file=sys.stderr)

    def config_text(self, cfg: Any) -> None:
        """The run's config in TensorBoard's text tab (YAML in a code block)."""
        if self.write:
            self.writer.text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```", 0)
            self.writer.flush()

    def scalars(self, generation: int, values: dict[str, float]) -> None:
        if not self.write:
            return
        for tag, v in values.items():
            self.writer.scalar(tag, v, generation)
        self.writer.flush()

    def record(self, generation: int, metrics: dict[str, float]) -> None:
        """To TensorBoard and as one line of metrics.jsonl."""
        if not self.write:
            return
        self.scalars(generation, metrics)
        line = json.dumps({"generation": generation, "time": round(time.time(), 3), **metrics}) + "\n"
        with open(self.jsonl, "a") as f:  # append-only: a kill mid-line is dropped by recover()
            f.write(line[: len(line) // 2])
            f.flush()
            fault("append:metrics.jsonl")
            f.write(line[len(line) // 2 :])

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
        # Tags of this run (not a run per curve), in an event file of their own beside the
        # run's scalars, so that a resume can drop later evaluations' curves and keep the rest.
        events = EventFile(self.run_dir / "tb", suffix=f"{CURVES_SUFFIX}{generation:06d}")
        for name, curve in curves.items():
            for step, v in enumerate(np.asarray(curve).tolist()):
                events.scalar(f"eval_curve/gen_{generation:06d}/{name}", float(v), step)
        events.close()

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


REWRITTEN_EVENTS = "events.out.tfevents.0000000000.rewritten"
CURVES_SUFFIX = ".curves_gen_"  # event files holding one evaluation's curves end in this + generation


class EventFile:
    """A TensorBoard event file written synchronously by the caller's thread, so that
    a write error (a full disk) is an OSError here, and nothing is left to flush at
    exit (tensorboardX's SummaryWriter writes from threads that print tracebacks then)."""

    def __init__(self, logdir: Path, suffix: str = ""):
        logdir.mkdir(parents=True, exist_ok=True)
        self._events = EventsWriter(str(logdir / "events"), f".{os.getpid()}{suffix}")

    def scalar(self, tag: str, value: float, step: int) -> None:
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=scalar_summary(tag, value))
        self._events.write_event(event)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=text_summary(tag, text))
        self._events.write_event(event)

    def flush(self) -> None:
        self._events.flush()

    def close(self) -> None:
        self._events.close()


def recover(run_dir: Path, start: int) -> None:
    """Make ``metrics.jsonl`` and TensorBoard hold exactly the generations up to ``start``
    (the restored checkpoint; none when a run starts from scratch) before appending:
    a half-written last line (a kill mid-write) and the generations after the checkpoint
    (recomputed now) go. The events are rewritten from the kept lines, so TensorBoard
    shows every generation once."""
    path = run_dir / "metrics.jsonl"
    rows = _complete_rows(path) if path.exists() else []
    keep = [r for r in rows if start > 0 and r["generation"] <= start]
    if path.exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    _rewrite_tensorboard(run_dir / "tb", keep, start)


def _complete_rows(path: Path) -> list[dict]:
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line can be half-written; drop it
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON (the file was edited?)") from None
    return rows


def _rewrite_tensorboard(tb: Path, rows: list[dict], start: int) -> None:
    """Scalars from ``rows`` into a fresh event file; curves of later generations removed."""
    if not tb.is_dir():
        return
    fresh = tb / ".rewrite"
    shutil.rmtree(fresh, ignore_errors=True)  # a kill during an earlier rewrite
    events = EventFile(fresh)
    for r in rows:
        for tag, v in r.items():
            if tag not in ("generation", "time") and isinstance(v, (int, float)):
                events.scalar(tag, v, r["generation"])
    events.close()
    for p in tb.iterdir():  # metrics.jsonl is the record: a kill from here on is redone next time
        if p.is_file() and "tfevents" in p.name and not _kept_curves(p, start):
            p.unlink()
    (written,) = fresh.iterdir()
    written.rename(tb / REWRITTEN_EVENTS)  # named to sort (and so load) before the new events
    fresh.rmdir()


def _kept_curves(path: Path, start: int) -> bool:
    """Whether ``path`` holds the curves of an evaluation at or before the restored generation."""
    _, sep, generation = path.name.rpartition(CURVES_SUFFIX)
    return bool(sep) and generation.isdigit() and start > 0 and int(generation) <= start


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of a metrics file (a half-written last line is skipped)."""
    return _complete_rows(Path(path))


def plot_run(run_dir: Path, meta_loss: str = "train", meta_weight: str = "uniform") -> Path | None:
    """``meta_training.png``: population fitness and the mean theta's meta-loss over generations,
    both the normalised loss that ``meta_loss`` (the run's ``unroll.meta_loss``) names, its steps
    weighted as ``meta_weight`` (``unroll.meta_weight``) says."""
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
    loss = LOSS_NAMES[meta_loss] + ("" if meta_weight == "uniform" else ", end-weighted")
    for key, label, style in [
        ("meta_loss/mean_theta", f"meta-loss ({loss}) of mean theta", "o-"),
        ("meta_loss/mean_theta_train", "mean training loss of mean theta (not the objective)", "x:"),
    ]:
        pts = [(r["generation"], r[key]) for r in rows if not math.isnan(r.get(key, math.nan))]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    adam = [(r["generation"], r["meta_loss/adam"]) for r in rows if "meta_loss/adam" in r]
    if adam:  # a line, not a constant: a resumed run may evaluate on other tasks than before
        ax.plot(*zip(*adam), color="gray", ls="--", label="Adam (same tasks)", drawstyle="steps-post")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"normalised {loss}")
    ax.set_title(f"meta-training on the {loss} (unroll.meta_loss={meta_loss}, meta_weight={meta_weight})")
    ax.legend()
    fig.tight_layout()
    out = run_dir / "meta_training.png"
    tmp = run_dir / f"{TMP_PREFIX}meta_training.png"
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out

"""What a person watching a run sees, on a terminal or not (SLURM, nohup, CI).

- :func:`start_line`: printed before compilation, so the first minute is not silent.
- :class:`ProgressReporter`: off a terminal (where the bar is off), one line at least
  every ``every_s`` seconds and at least every ``every_frac`` of the run, with the
  generation, fitness, generations/s and the ETA. The rate is measured over the
  generations since the reporter started (compilation excluded: it starts counting at
  the first reported generation).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def cache_text(directory: Any) -> str:
    """``compile cache DIR`` or ``no compile cache`` (``evolopt.compile_cache``), for start lines."""
    return "no compile cache" if not directory else f"compile cache {directory}"


def start_line(cfg: Any, run_dir: Any, resuming: bool, devices: str, cache: Any = None) -> str:
    """``run_dir, new or resuming, devices, the key settings; the compile cache; compiling...``."""
    what = "resuming from its last checkpoint" if resuming else "new run"
    return (
        f"evolopt.train: {run_dir} ({what}) on {devices}: strategy {cfg.strategy.name} "
        f"(population {cfg.population_size}), arch {cfg.arch.name}, task_family {cfg.task_family.name}, "
        f"{cfg.generations} generations, seed {cfg.seed}; "
        f"{cache_text(cache)}; compiling..."
    )


def eta_text(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressReporter:
    """Plain progress lines for logs: ``update`` returns (and prints) a line when one is due.

    Due when ``every_s`` seconds passed since the last line, when the run crossed another
    ``every_frac`` of its generations, or at the last generation."""

    def __init__(
        self,
        total: int,
        start: int,
        every_s: float = 30.0,
        every_frac: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ):
        self.total, self.start = total, start
        self.every_s, self.step = every_s, max(1, int(total * every_frac))
        self.clock = clock
        self.emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self.t0 = self.last_time = None
        self.first = start
        self.last_mark = start // self.step

    def update(self, generation: int, metrics: dict[str, float]) -> str | None:
        now = self.clock()
        first = self.t0 is None
        if first:  # the first generation includes compilation: time from its end (and say it ran)
            self.t0, self.last_time, self.first = now, now, generation
        mark = generation // self.step
        due = first or now - self.last_time >= self.every_s or mark > self.last_mark or generation >= self.total
        if not due:
            return None
        self.last_time, self.last_mark = now, mark
        done = generation - self.first
        rate = done / (now - self.t0) if now > self.t0 and done > 0 else float("nan")
        eta = (self.total - generation) / rate if rate == rate and rate > 0 else float("nan")
        mean, best = metrics.get("fitness/mean", float("nan")), metrics.get("fitness/min", float("nan"))
        line = (
            f"generation {generation}/{self.total} ({100 * generation / self.total:.0f}%): "
            f"fitness mean {mean:.4f} best {best:.4f}, {rate:.2f} gen/s, ETA {eta_text(eta)}"
        )
        self.emit(line)
        return line

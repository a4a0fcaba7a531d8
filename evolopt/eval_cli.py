"""``evolopt-evaluate`` (or ``python -m evolopt.evaluate``): the evaluation CLI, a Hydra app like train.

    evolopt-evaluate optimizer=runs/x suite=tiny
    evolopt-evaluate optimizer=celo2-cpu suite=heldout tasks=[digits_conv] seeds=1 out=evals/c

It prints an estimate before starting, writes each task's result under ``out/tasks/``
as it finishes (the same command continues an interrupted evaluation) and the
report (``results.md``, ``results.csv``, ``lr_grid.csv``, ``curves.png``, ``tb/``)
at the end; it writes nothing outside ``out``. ``baselines_from=DIR`` reads the tuned
baselines of an earlier evaluation under the same protocol instead of training them
(:mod:`evolopt.eval_reuse`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from evolopt.cli import Argv, compose_flat, run_hydra
from evolopt.eval_grid import SCORES
from evolopt.eval_report import FORMAT, OLDER
from evolopt.eval_run import _minutes, estimate_seconds
from evolopt.registry import ConfigError

PROG = "evolopt.evaluate"
LIST_KEYS = ("tasks", "baselines", "plugins")


@dataclasses.dataclass
class Settings:
    """A checked evaluation request."""

    candidate: Any
    suite_name: str
    suite: list
    seeds: int
    n_lrs: int
    n_cand: int
    baselines: list[str]
    out: Path
    spec: str
    score: str = "mean"
    baselines_from: Path | None = None
    reused: dict = dataclasses.field(default_factory=dict)  # task -> baseline -> (tuned rate, grid rows)
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1 (evolopt.eval_grid)

    def protocol(self) -> dict:
        """What a stored task result must have been measured under to be reused (``score`` included:
        it picks every optimizer's rate)."""
        return {
            "format": FORMAT,
            "score": self.score,
            "optimizer": self.spec,
            "suite": self.suite_name,
            "seeds": self.seeds,
            "lrs": self.n_lrs,
            "candidate_lrs": self.n_cand,
            "baselines": self.baselines,
            "first_seed": self.first_seed,
        }

    def task_protocol(self, task: Any) -> dict:
        """:meth:`protocol` and the task's definition (name, family, options, steps): what one stored task
        must match (``baselines_from`` changes no number and is not part of it)."""
        from evolopt.eval_store import task_definition

        return {**self.protocol(), "task": task_definition(task)}


def legacy_lists(overrides: list[str], multirun: bool) -> list[str]:
    """``tasks=a,b`` (today's form) is ``tasks=[a,b]`` outside a sweep."""
    out = []
    for ov in overrides:
        key, _, value = ov.partition("=")
        if key in LIST_KEYS and "," in value and not value.startswith("[") and not multirun:
            ov = f"{key}=[{value}]"
        out.append(ov)
    return out


def _count(cfg: Any, key: str, default: int, minimum: int) -> int:
    raw = cfg.get(key)
    raw = default if raw is None else raw
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise ConfigError(f"{key}={raw} must be an integer >= {minimum}")
    return raw


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, int, float)) else [str(v) for v in value]


def settings(cfg: Any) -> Settings:
    """Check a composed evaluate config; ConfigError naming the bad value and the valid choices."""
    from evolopt import compile_cache
    from evolopt.architectures.baselines import OPTAX_BASELINES
    from evolopt.config import import_plugins
    from evolopt.eval_task import resolve_candidate
    from evolopt.export import ThetaFileError
    from evolopt.registry import TASK_FAMILIES
    from evolopt.suites import get_suite

    import_plugins(_as_list(cfg.plugins))
    compile_cache.check(cfg.get("compile_cache", "auto"))
    spec = cfg.get("optimizer")
    if spec is None or str(spec) == "???":
        raise ConfigError("optimizer= is required: a theta file, run dir, pretrained name, arch:theta or baseline")
    suite_name = str(cfg.suite)
    suite = get_suite(suite_name)
    if cfg.tasks is not None:
        names = [t.name for t in suite]
        for name in _as_list(cfg.tasks):
            if name not in names:
                raise ConfigError(f"task '{name}' is not in suite '{suite_name}'; valid choices: {', '.join(names)}")
        suite = [t for t in suite if t.name in _as_list(cfg.tasks)]
    score = str(cfg.get("score") or "mean")
    if score not in SCORES:
        raise ConfigError(
            f"unknown score '{score}'; valid choices: {', '.join(SCORES)} (mean: mean train loss over the run, "
            "final: smoothed final train loss)"
        )
    seeds, n_lrs = _count(cfg, "seeds", 3, 1), _count(cfg, "lrs", 9, 1)
    first_seed = _count(cfg, "first_seed", 0, 0)
    n_cand = _count(cfg, "candidate_lrs", n_lrs, 0)
    baselines = _as_list(cfg.baselines)
    for b in baselines or [""]:
        if b not in OPTAX_BASELINES:
            raise ConfigError(f"unknown baseline '{b}'; valid choices: {', '.join(OPTAX_BASELINES)}")
    try:
        candidate = resolve_candidate(str(spec))
    except ThetaFileError as e:
        raise ConfigError(f"optimizer={spec}: {e}") from None
    if n_cand and candidate.own_lr is None:
        raise ConfigError(
            f"candidate_lrs={n_cand}: arch '{candidate.lopt.name}' has no learning_rate hyperparameter to tune; "
            "valid: candidate_lrs=0"
        )
    for task in suite:
        TASK_FAMILIES.get(task.family)
    out = Path(cfg.out) if cfg.out is not None else Path("evaluations") / f"{Path(str(spec)).stem}_{suite_name}"
    s = Settings(
        candidate, suite_name, suite, seeds, n_lrs, n_cand, baselines, out, str(spec), score, first_seed=first_seed
    )
    _check_out(s)
    if cfg.get("baselines_from") is not None:  # every task checked now, before any training
        from evolopt.eval_reuse import load_baselines

        s.baselines_from = Path(str(cfg.baselines_from))
        s.reused = load_baselines(s.baselines_from, suite, baselines, s.protocol())
    return s


def _check_out(s: Settings) -> None:
    """Refuse an ``out`` that holds another evaluation (nothing is overwritten)."""
    from evolopt.eval_store import stored_protocol

    old = stored_protocol(s.out)
    old = None if old is None else {k: v for k, v in old.items() if k != "task"}  # per task: eval_store
    if old is not None and old.get("format") != FORMAT:
        raise ConfigError(
            f"out='{s.out}' holds an evaluation stored by an older evolopt (format {old.get('format', 1)}, "
            f"{OLDER.get(old.get('format', 1), 'another format')}); choose another out="
        )
    if old is not None and old != s.protocol():
        diff = next(k for k in s.protocol() if old.get(k) != s.protocol()[k])
        raise ConfigError(
            f"out='{s.out}' holds an evaluation with {diff}={old.get(diff)}, not {s.protocol()[diff]}; "
            "run its own command to continue it or choose another out="
        )
    if old is None and s.out.exists() and (s.out / "results.md").exists():
        raise ConfigError(f"out='{s.out}' holds a finished evaluation; choose another out=")


def help_text() -> str:
    """``evolopt-evaluate --help``: keys with defaults, suites with task counts and rough time, outputs."""
    import importlib.resources

    from evolopt.suites import SUITES

    with open(importlib.resources.files("evolopt.conf") / "evaluate.yaml") as f:
        text = f.read().split("# --- Hydra")[0]
    keys = ["  " + line for line in text.splitlines() if line and not line.startswith(("#", "defaults", "  -"))]
    lines = [
        "usage: evolopt-evaluate optimizer=SPEC [suite=NAME] [KEY=VALUE ...]   (also: python -m evolopt.evaluate)",
        "",
        "Evaluate a learned optimizer against learning-rate-tuned optax baselines (Hydra overrides).",
        "Example: evolopt-evaluate optimizer=runs/x suite=tiny",
        "",
        "Keys (defaults):",
        *keys,
        "",
        "Scores: every optimizer at its chosen rate gets three, each a mean over seeds: mean train loss over the",
        "  run (area under the curve / steps), final train loss (smoothed over the last 5% of steps) and final",
        "  validation (test) loss. score= (default mean: what users pay for over a run, and the usual external",
        "  protocol) picks each optimizer's learning rate and the headline; validation loss is never tuned on.",
        "  The report gives, against each baseline and the best of them, win rates and geometric-mean ratios on",
        "  all three, and flags tasks where the candidate wins on train loss but loses on validation loss.",
        "",
        "Suites (rough time with the defaults on 2 CPU cores; scales with seeds x (baselines x lrs + candidate_lrs)):",
    ]
    for name, suite in sorted(SUITES.items()):
        est = estimate_seconds(suite, 3, 4, 9, 9)  # the defaults: 3 seeds, 4 baselines, 9 + 9 rates
        lines.append(f"  {name:<10} {len(suite)} tasks, ~{_minutes(est)}: {', '.join(t.name for t in suite)}")
    lines += [
        "",
        "Outputs under out=: tasks/<task>.npz as each task finishes (run the same command to continue an",
        "  interrupted evaluation), then results.md, results.json, results.csv, lr_grid.csv, curves.png, tb/",
        "  (TensorBoard).",
        "Hydra: --cfg job prints the composed config; -m sweeps put job N under <out>/N.",
    ]
    return "\n".join(lines)


def _validate(overrides: list[str]) -> None:
    cfg = compose_flat("evaluate", overrides, _KEYS)
    settings(cfg)


_KEYS = [
    "optimizer",
    "suite",
    "score",
    "tasks",
    "seeds",
    "first_seed",
    "baselines",
    "lrs",
    "candidate_lrs",
    "baselines_from",
    "out",
    "compile_cache",
    "plugins",
]


def _prepare(args: Argv) -> None:
    args.overrides = legacy_lists(args.overrides, args.multirun)
    bad = [ov for ov in args.overrides if "=" not in ov]
    if bad:
        raise ConfigError(f"bad arguments {bad}; give KEY=VALUE with keys {', '.join(_KEYS)}")
    if args.multirun and args.runs_task and not any(ov.startswith("out=") for ov in args.overrides):
        raise ConfigError("a sweep (-m) needs out=DIR: job N writes under DIR/N")


def evaluate_job(cfg: Any) -> float:
    """One Hydra job; returns the IQM of the normalised losses (what a sweeper would minimise)."""
    from evolopt import compile_cache
    from evolopt.cli import job_dir
    from evolopt.eval_run import run

    compile_cache.configure(cfg.get("compile_cache", "auto"))  # before the first compile
    s = settings(cfg)
    if cfg.out is not None:
        s.out = Path(job_dir(str(cfg.out)))
    return run(s)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    return run_hydra(PROG, argv, "evaluate", "out", _prepare, _validate, evaluate_job)

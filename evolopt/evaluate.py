"""``python -m evolopt.evaluate optimizer=... suite=heldout seeds=3``: a candidate vs tuned baselines.

For every task of the suite the candidate trains ``seeds`` runs for the task's step
budget; each baseline (optax adam, adamw, sgdm by default) trains the same seeds at
every learning rate of a log-spaced grid and is represented by its best rate (lowest
mean final training loss). Per task we report final train/valid loss, the candidate's
*normalised loss* (its final loss / the best tuned baseline's), and its *speedup*: the
number of steps the candidate needs to reach the best baseline's final loss, as a
fraction of the baseline's steps (< 1 is faster; inf if never reached). Over tasks: the
win rate (normalised loss < 1) and the interquartile mean of normalised losses.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.architectures.baselines import OPTAX_BASELINES, baseline
from evolopt.registry import TASK_FAMILIES, ConfigError
from evolopt.unroll import train_curve

@dataclasses.dataclass
class Result:
    task: str
    in_distribution: bool
    candidate_train: float
    candidate_valid: float
    baseline: str
    baseline_lr: float
    baseline_train: float
    baseline_valid: float
    normalized_loss: float
    speedup: float
    curves: dict


def resolve_candidate(spec: str) -> tuple[str, Any, Any]:
    """``(label, LearnedOptimizer or None, theta)``; None means: a baseline name, tuned like the others."""
    from evolopt.export import load_learned_optimizer, pretrained_names, resolve_path

    if spec in OPTAX_BASELINES:
        return spec, None, None
    if not resolve_path(spec).exists():
        raise ConfigError(
            f"optimizer '{spec}' is not a theta file, run dir, pretrained name ({', '.join(pretrained_names()) or 'none'}) "
            f"or baseline ({', '.join(OPTAX_BASELINES)})"
        )
    lopt, theta = load_learned_optimizer(spec)
    return spec, lopt, theta


def _curves(family, lopt, theta, steps: int, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw training curves [seeds, steps] and final valid losses [seeds]."""

    def run(key):
        curve, valid = train_curve(theta, key, family, lopt, steps, loss_clip=1e30)
        return curve * family.loss_scale, valid * family.loss_scale

    keys = jax.random.split(jax.random.key(1234), seeds)  # the same seeds for every optimizer
    curves, valid = jax.jit(jax.vmap(run))(keys)
    return np.asarray(curves), np.asarray(valid)


def _tuned_baseline(family, name: str, steps: int, seeds: int, lr_grid: np.ndarray):
    """Best learning rate of the grid by mean final train loss: (lr, curves, valid)."""

    def run(lr, key):
        curve, valid = train_curve({}, key, family, baseline(name, lr), steps, loss_clip=1e30)
        return curve * family.loss_scale, valid * family.loss_scale

    keys = jax.random.split(jax.random.key(1234), seeds)
    grid = jax.jit(jax.vmap(lambda lr: jax.vmap(lambda k: run(lr, k))(keys)))
    curves, valid = (np.asarray(x) for x in grid(jnp.asarray(lr_grid, jnp.float32)))
    final = np.nan_to_num(smooth(curves)[..., -1].mean(axis=1), nan=np.inf)
    best = int(np.argmin(final))
    return float(lr_grid[best]), curves[best], valid[best]


def smooth(curves: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Trailing running mean over ``frac`` of the steps: minibatch noise out of 'final loss'."""
    w = max(1, int(frac * curves.shape[-1]))
    c = np.cumsum(np.nan_to_num(curves, nan=np.inf, posinf=1e30), axis=-1)
    out = c.copy()
    out[..., w:] = (c[..., w:] - c[..., :-w]) / w
    out[..., :w] = c[..., :w] / np.arange(1, w + 1)
    return out


def steps_to_reach(curve: np.ndarray, target: float) -> float:
    hit = np.nonzero(curve <= target)[0]
    return float(hit[0] + 1) if len(hit) else math.inf


def iqm(values: list[float]) -> float:
    v = np.sort(np.asarray(values, float))
    lo, hi = int(np.floor(0.25 * len(v))), int(np.ceil(0.75 * len(v)))
    return float(np.mean(v[lo:hi])) if hi > lo else float(np.mean(v))


def evaluate_task(task, candidate, baselines: list[str], seeds: int, lr_grid: np.ndarray) -> Result:
    family = TASK_FAMILIES.build(task.family, **task.options)
    label, lopt, theta = candidate
    tuned = {name: _tuned_baseline(family, name, task.steps, seeds, lr_grid) for name in baselines}
    if lopt is None:  # a baseline as candidate: tuned too
        _, cand_curves, cand_valid = _tuned_baseline(family, label, task.steps, seeds, lr_grid)
    else:
        cand_curves, cand_valid = _curves(family, lopt, theta, task.steps, seeds)
    best_name = min(tuned, key=lambda n: smooth(tuned[n][1])[:, -1].mean())
    best_lr, base_curves, base_valid = tuned[best_name]
    cand_mean, base_mean = smooth(cand_curves).mean(0), smooth(base_curves).mean(0)
    cand_final, base_final = float(cand_mean[-1]), float(base_mean[-1])
    return Result(
        task=task.name,
        in_distribution=task.in_distribution,
        candidate_train=cand_final,
        candidate_valid=float(np.mean(cand_valid)),
        baseline=best_name,
        baseline_lr=best_lr,
        baseline_train=base_final,
        baseline_valid=float(np.mean(base_valid)),
        normalized_loss=cand_final / base_final if base_final > 0 else math.inf,
        speedup=steps_to_reach(cand_mean, base_final) / task.steps,
        curves={label: cand_curves, **{f"{n} (lr={tuned[n][0]:.0e})": tuned[n][1] for n in tuned}},
    )


def write_report(results: list[Result], out: Path, label: str, suite: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fields = ["task", "in_distribution", "candidate_train", "candidate_valid", "baseline", "baseline_lr",
              "baseline_train", "baseline_valid", "normalized_loss", "speedup"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in results:
            w.writerow([getattr(r, k) for k in fields])
    norm = [r.normalized_loss for r in results]
    wins = sum(n < 1.0 for n in norm)
    lines = [
        f"# {label} vs LR-tuned baselines on suite `{suite}`",
        "",
        "| task | in-dist | train loss | valid loss | best baseline (lr) | its train | its valid | normalised loss | speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.task} | {'yes' if r.in_distribution else 'no'} | {r.candidate_train:.4f} | {r.candidate_valid:.4f} | "
            f"{r.baseline} ({r.baseline_lr:.0e}) | {r.baseline_train:.4f} | {r.baseline_valid:.4f} | "
            f"{r.normalized_loss:.3f} | {r.speedup:.2f} |"
        )
    lines += ["", f"Win rate (normalised loss < 1): {wins}/{len(results)}; IQM normalised loss: {iqm(norm):.3f}.",
              "Speedup: fraction of the baseline's steps the candidate needs to reach its final loss (< 1 is faster)."]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    plot_curves(results, out)
    write_tensorboard(results, out)
    return text


def plot_curves(results: list[Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results):
        for name, curves in r.curves.items():
            ax.plot(smooth(curves).mean(0), label=name)
        ax.set_title(r.task)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def write_tensorboard(results: list[Result], out: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(out / "tb")) as w:
        for r in results:
            means = {name: smooth(c).mean(0) for name, c in r.curves.items()}
            for step in range(0, len(next(iter(means.values()))), max(1, len(next(iter(means.values()))) // 200)):
                w.add_scalars(f"{r.task}/train_loss", {n: float(m[step]) for n, m in means.items()}, step)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from evolopt.config import import_builtins, import_plugins
    from task_families.suites import get_suite

    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m evolopt.evaluate optimizer=<theta.npz | run dir | pretrained | adam | ...> "
             "suite=<name> [seeds=3] [baselines=adam,adamw,sgdm] [lrs=9] [out=DIR] [plugins=mod1,mod2]")
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        return 0
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    valid = {"optimizer", "suite", "seeds", "baselines", "lrs", "out", "plugins"}
    bad = [a for a in argv if "=" not in a] + sorted(set(args) - valid)
    try:
        if bad or "optimizer" not in args:
            raise ConfigError(f"bad arguments {bad or argv}; valid keys: {', '.join(sorted(valid))}")
        import_builtins()
        import_plugins([m for m in args.get("plugins", "").split(",") if m])
        suite = get_suite(args.get("suite", "heldout"))
        seeds, n_lrs = int(args.get("seeds", 3)), int(args.get("lrs", 9))
        if seeds < 1 or n_lrs < 1:
            raise ConfigError(f"seeds={seeds} and lrs={n_lrs} must be >= 1")
        baselines = [b for b in args.get("baselines", "adam,adamw,sgdm").split(",") if b]
        for b in baselines:
            if b not in OPTAX_BASELINES:
                raise ConfigError(f"unknown baseline '{b}'; valid choices: {', '.join(OPTAX_BASELINES)}")
        lr_grid = np.logspace(-4, 0, n_lrs) if n_lrs > 1 else np.array([1e-3])
        candidate = resolve_candidate(args["optimizer"])
        for task in suite:
            TASK_FAMILIES.get(task.family)
    except (ConfigError, ValueError) as e:
        print(f"evolopt.evaluate: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.get("out", f"evaluations/{Path(args['optimizer']).stem}_{args.get('suite', 'heldout')}"))
    results = []
    bar = tqdm(suite, desc="evaluate", unit="task", disable=not sys.stderr.isatty())
    for task in bar:
        results.append(evaluate_task(task, candidate, baselines, seeds, lr_grid))
        if bar.disable:  # still say where we are in a log file
            r = results[-1]
            print(f"[{len(results)}/{len(suite)}] {r.task}: normalised loss {r.normalized_loss:.3f}", file=sys.stderr, flush=True)
    print(write_report(results, out, candidate[0], args.get("suite", "heldout")))
    print(f"wrote {out}/results.md, results.csv, curves.png, tb/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Running a checked evaluation (:class:`evolopt.eval_cli.Settings`): estimate, per-task results, report."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from evolopt.eval_report import iqm, write_report
from evolopt.eval_store import load_result, save_result
from evolopt.progress import cache_text

# Rough wall seconds per task for the protocol they were measured under (3 seeds; 3 baselines x 9
# rates and the candidate, Celo2, tuned over 9 rates: 108 runs) on 2 CPU cores. heldout: measured,
# see experiments/celo2_cpu/eval_seed0_tuned/results.md; tiny: this CLI's test machine. Other
# protocols scale by their number of runs: a Muon run costs 1.14-1.26x an Adam run (9 rates x 3
# seeds, digits MLP, digits convnet, LM; measured side by side), so the default's 4th baseline
# (135 runs) is counted as 25% more time, about what it adds.
DEFAULT_RUNS = 108
SECONDS = {
    "quadratic_d10": 12,
    "digits_mlp32_8x8": 105,
    "digits_mlp128x2_8x8": 422,
    "digits_mlp32_horizon5k": 136,
    "mnist5k_mlp64x2_16x16": 177,
    "mnist1d_mlp64_tanh": 110,
    "digits_conv": 278,
    "lm_char_transformer": 894,
    "rl_cartpole_ppo": 140,
    # validation and heldout2: an Adam grid (9 rates x 3 seeds, compile included) timed between two
    # timings of a heldout task of the same kind (digits_mlp32_8x8, digits_conv, lm_char_transformer
    # == lm_d32x1), scaled by that task's measured time above (experiments/es_diagnostics/suite_floor.md)
    "v_mnist5k_mlp32_8x8": 91,
    "v_mnist1d_mlp32x2_gelu": 121,
    "v_mnist1d_mlp16_silu": 85,
    "v_digits_conv4x8": 150,
    "v_lm_d16": 240,
    "v_regression_mlp32_gelu": 97,
    "mnist5k_mlp16_16x16": 120,
    "mnist5k_mlp48x3_tanh_16x16": 101,
    "mnist1d_mlp128_relu": 94,
    "mnist1d_mlp64x2_silu": 207,
    "mnist5k_conv8x16_16x16": 890,
    "lm_d32x1": 894,
    "lm_d64x2": 2001,
    "regression_mlp64x2_relu": 156,
    "regression_mlp16_tanh_horizon2k": 135,
    # mnist1d_family: scaled from mnist1d_mlp128_relu by steps and width, not measured
    "s_mnist1d_mlp64_horizon3k": 230,
    "s_mnist1d_mlp24": 60,
    "s_mnist1d_mlp96x2": 110,
    "s_mnist1d_mlp64_12x12": 85,
}
TINY_SECONDS = {"quadratic_d10": 12, "digits_mlp32_8x8": 27}  # 30 steps each


def estimate_seconds(suite: list, seeds: int, n_baselines: int, n_lrs: int, n_cand: int) -> float:
    """Rough wall seconds on 2 CPU cores: each task's measured default time scaled by its number of runs."""
    runs = seeds * (n_baselines * n_lrs + max(n_cand, 1))
    table = {**SECONDS, **TINY_SECONDS}
    total = 0.0
    for t in suite:
        base = TINY_SECONDS.get(t.name) if t.steps <= 50 else table.get(t.name)
        total += (base if base is not None else t.steps * 0.1) * runs / DEFAULT_RUNS
    return total


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


CRITERIA = {"mean": "mean train loss over the run", "final": "smoothed final train loss"}


def protocol_text(s: Any, lrs: np.ndarray, cand_lrs: np.ndarray, devices: str) -> str:
    return (
        f"Tuning score: {s.score} ({CRITERIA[s.score]}, mean over {s.seeds} seeds); it picks every optimizer's "
        f"learning rate and the headline. Baselines ({', '.join(s.baselines)}) tuned over {len(lrs)} learning rates "
        f"({lrs[0]:.0e}..{lrs[-1]:.0e}); "
        + (
            f"candidate tuned over {len(cand_lrs)} ({cand_lrs[0]:.0e}..{cand_lrs[-1]:.0e}) the same way, "
            "also shown at its own rate"
            if len(cand_lrs)
            else "candidate at its own learning rate"
        )
        + f". {s.seeds} seeds per task"
        + (f" (evaluation seeds {s.first_seed}..{s.first_seed + s.seeds - 1})" if s.first_seed else "")
        + f"; grids sharded over {devices}."
        + (
            f"\nBaselines ({', '.join(s.baselines)}) reused from {s.baselines_from} (read from its tasks/, "
            "not trained: the same protocol, so the same numbers)."
            if s.baselines_from is not None
            else ""
        )
    )


def run(s: Any) -> float:
    """Evaluate every task of ``s.suite`` not already stored under ``s.out``; write the report.

    Returns the IQM of the normalised losses."""
    import jax
    from tqdm import tqdm

    from evolopt import eval_task
    from evolopt.eval_grid import grid_mesh, lr_grid

    lrs, cand_lrs = lr_grid(s.n_lrs), lr_grid(s.n_cand)
    mesh = grid_mesh()
    protocol = protocol_text(s, lrs, cand_lrs, f"{mesh.size} {jax.local_devices()[0].platform} device(s)")
    done = {t.name: load_result(s.out, t.name, s.task_protocol(t)) for t in s.suite}
    todo = [t for t in s.suite if done[t.name] is None]
    bar = tqdm(todo, desc="evaluate", unit="task", disable=not sys.stderr.isatty())
    log = bar.write if not bar.disable else (lambda m: print(m, file=sys.stderr, flush=True))
    est = estimate_seconds(todo, s.seeds, 0 if s.reused else len(s.baselines), s.n_lrs, s.n_cand)
    kept = len(s.suite) - len(todo)
    log(
        f"evaluating {s.candidate.label} on {len(s.suite)} tasks of suite '{s.suite_name}' into {s.out}; "
        + (f"{kept} already done there (kept); " if kept else "")
        + f"estimate ~{_minutes(est)} on 2 CPU cores; {protocol}; "
        + cache_text(jax.config.jax_compilation_cache_dir)  # the directory jax uses in this process
    )
    for i, task in enumerate(bar):
        reused = s.reused.get(task.name)
        r = eval_task.evaluate_task(
            task, s.candidate, s.baselines, s.seeds, lrs, cand_lrs, mesh, log, s.score, reused, s.first_seed
        )
        save_result(s.out, r, s.task_protocol(task))  # kept if interrupted later
        done[task.name] = r
        log(
            f"[{kept + i + 1}/{len(s.suite)}] {r.task}: normalised {s.score} train loss {r.normalized_loss:.3f} "
            f"at lr {r.candidate_lr:.0e} ({r.own_normalized_loss:.3f} at own lr), {r.seconds:.0f} s"
        )
    results = [done[t.name] for t in s.suite]
    print(write_report(results, s.out, s.candidate.label, s.suite_name, protocol))
    print(
        f"wrote {s.out}/results.md, results.json, results.csv, lr_grid.csv, curves.png, tb/ "
        f"(tensorboard --logdir {s.out}/tb)"
    )
    return float(iqm([r.normalized_loss for r in results]))

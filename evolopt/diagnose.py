"""``python -m evolopt.diagnose [TRAIN OVERRIDES] [pairs=8,32,128] [out=DIR] ...``: how good is the
ES gradient at a theta?

Takes the same overrides as ``evolopt.train`` (arch, task_family, strategy, unroll,
augmentation, ``theta_init=`` random | a named start such as ``muon`` | a theta file, run dir or
pretrained name) and reports, at that theta (numerics in :mod:`evolopt.gradient_probe`):

* per population size (``pairs`` antithetic pairs x ``tasks_per_member`` particles, as one
  generation uses): cosine between independent estimates, with the mean of all other
  particles, with an autodiff reference gradient of the same objective (null where the family
  or arch is not differentiable), and of Adam's first step (the sign of the estimate) with it;
* PES vs truncated ES vs full-unroll ES, the per-particle signal-to-noise ratio and the
  population needed for a target cosine; a bias check (does the mean of all particles agree
  with the reference as well as its noise allows?);
* the smoothing gap: validation meta-loss at theta vs at ``theta +- sigma eps`` for several sigma;
* fitness spread split into task noise and perturbation signal, and losses at ``loss_clip``.

Writes ``diagnose.json`` (``{"rows": [...one per pairs...], ...}``), ``diagnose.md``,
``gradients.npz`` (each estimator's mean gradient, for ``compare=``) and TensorBoard events
under ``out``. ``python -m evolopt.diagnose compare=OUT_A,OUT_B`` prints how well the
meta-gradients of two diagnoses at the same theta align (:mod:`evolopt.gradient_alignment`).

Diagnose-only keys: ``pairs``, ``out``, ``repeats`` (independent estimates per size),
``truncations``, ``warmup``, ``ref_particles``, ``sigmas`` (smoothing gap), ``gap_samples``,
``gap_tasks``, ``gap_steps``, ``autodiff`` (auto|true|false), ``full`` (true|false),
``estimator`` (auto|pes|truncated|full: the row's main one), ``inject_bias`` (test hook: add a
fixed direction of this size relative to the reference to every estimate), ``chunk``, ``seed``
is the train key.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evolopt import gradient_alignment as ga
from evolopt.registry import ConfigError
from evolopt.run_dir import atomic_write_text

DEFAULTS: dict[str, str] = {
    "pairs": "8,32,128",
    "out": "diagnose_out",
    "repeats": "4",
    "truncations": "2",
    "warmup": "0",
    "ref_particles": "0",  # 0: as many as one block (max pairs x tasks_per_member)
    "sigmas": "0.001,0.003,0.01,0.03",
    "gap_samples": "4",
    "gap_tasks": "0",  # 0: evaluation.num_tasks
    "gap_steps": "0",  # 0: evaluation.steps
    "autodiff": "auto",
    "full": "true",
    "estimator": "auto",
    "inject_bias": "0",
    "chunk": "32",
    "radii": "none",  # e.g. 0.003,0.01,0.03: validation meta-loss after a step of that norm along -gradient
}
COSINE_TARGETS = (0.5, 0.9)


def _ints(key: str, text: str, low: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.strip("[]").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < low for v in values):
        raise ConfigError(f"{key}={text!r} must be a comma-separated list of integers >= {low}")
    return values


def _floats(key: str, text: str, positive: bool = True) -> list[float]:
    try:
        values = [float(v) for v in text.strip("[]").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not math.isfinite(v) or (positive and v <= 0) or v < 0 for v in values):
        kind = "positive numbers" if positive else "numbers >= 0"
        raise ConfigError(f"{key}={text!r} must be a comma-separated list of {kind}")
    return values


def _choice(key: str, text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ConfigError(f"bad {key}={text!r}; valid choices: {', '.join(choices)}")
    return text


def parse_options(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split diagnose-only keys from the train overrides; validate them (ConfigError)."""
    raw, rest = dict(DEFAULTS), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in DEFAULTS:
            raw[key] = value
        else:
            rest.append(arg)
    opts: dict[str, Any] = {"pairs": sorted(set(_ints("pairs", raw["pairs"]))), "out": Path(raw["out"])}
    for key in ("repeats", "truncations", "chunk"):
        opts[key] = _ints(key, raw[key])[0]
    for key in ("warmup", "ref_particles", "gap_samples", "gap_tasks", "gap_steps"):
        opts[key] = _ints(key, raw[key], low=0)[0]
    if opts["repeats"] < 2:
        raise ConfigError(f"repeats={opts['repeats']} must be >= 2 (independent estimates to compare)")
    for key in ("sigmas", "radii"):
        opts[key] = _floats(key, raw[key]) if raw[key] not in ("", "none") else []
    opts["inject_bias"] = _floats("inject_bias", raw["inject_bias"], positive=False)[0]
    opts["autodiff"] = _choice("autodiff", raw["autodiff"], ("auto", "true", "false"))
    opts["full"] = _choice("full", raw["full"], ("true", "false")) == "true"
    opts["estimator"] = _choice("estimator", raw["estimator"], ("auto", "pes", "truncated", "full"))
    if opts["estimator"] == "full" and not opts["full"]:
        raise ConfigError("estimator=full needs full=true")
    if (opts["out"] / "diagnose.json").exists():
        raise ConfigError(f"out='{opts['out']}' already holds a diagnosis; choose a new out")
    return opts, rest


def _block_stats(parts: np.ndarray, ref: np.ndarray | None, pairs: list[int], k: int, repeats: int) -> list[dict]:
    """Per pairs: cosines of ``repeats`` independent estimates (first ``pairs*k`` particles of each block)."""
    from evolopt.gradient_probe import cosine

    block = max(pairs) * k
    rows = []
    for p in pairs:
        ests = [parts[r * block : r * block + p * k].mean(0) for r in range(repeats)]
        rest = [np.delete(parts, np.s_[r * block : (r + 1) * block], axis=0).mean(0) for r in range(repeats)]
        indep = [cosine(ests[a], ests[b]) for a in range(repeats) for b in range(a + 1, repeats)]
        row = {
            "cos_independent": float(np.mean(indep)),
            "cos_mean_of_rest": float(np.mean([cosine(e, m) for e, m in zip(ests, rest)])),
            "cos_autodiff": None if ref is None else float(np.mean([cosine(e, ref) for e in ests])),
            "cos_autodiff_sign": None if ref is None else float(np.mean([cosine(np.sign(e), ref) for e in ests])),
        }
        rows.append(row)
    return rows


def _reference(probe: Any, key: Any, n: int, mode: str, notes: list[str]) -> np.ndarray | None:
    """Autodiff particles [n, D], or None (with a note) where the unroll is not differentiable or diverges."""
    from evolopt import gradient_probe as gp

    try:
        ref_parts = gp.reference_particles(probe, key, n)
    except Exception as e:  # a non-differentiable op: report, do not fail the other measurements
        why = str(e).splitlines()[0][:200]
        if mode == "true":
            raise ConfigError(f"autodiff=true but the unroll is not differentiable: {why}") from None
        notes.append(f"no autodiff reference: {why}")
        return None
    if not np.all(np.isfinite(ref_parts)):
        notes.append("autodiff reference is not finite (a diverging unroll); dropped")
        return None
    return ref_parts


def _inject_bias(parts: np.ndarray, ref: np.ndarray | None, size: float, key: Any) -> np.ndarray:
    """Test hook: every particle plus a fixed direction (orthogonal to ``ref``) of norm ``size |ref|``."""
    import jax

    scale = np.linalg.norm(ref if ref is not None else parts.mean(0))
    u = np.asarray(jax.random.normal(key, (parts.shape[1],)), np.float64)
    if ref is not None:
        u -= (u @ ref) / (ref @ ref) * ref
    return parts + size * scale * u / np.linalg.norm(u)


def _estimator_check(parts: np.ndarray, ref_parts: np.ndarray | None, k: int) -> dict[str, Any]:
    """SNR, pairs needed per target cosine, and the bias check of one estimator's particles."""
    from evolopt import gradient_probe as gp

    s = gp.snr(parts)
    check = {**s, **{f"pairs_for_cos_{c}": gp.particles_for_cosine(s["rho"], c) / k for c in COSINE_TARGETS}}
    if ref_parts is not None:
        ref = ref_parts.mean(0)
        measured = gp.cosine(parts.mean(0), ref)
        # two unbiased noisy means of the same g have cosine ~ sqrt(c_est) * sqrt(c_ref)
        c_est = math.sqrt(gp.predicted_cos_independent(s["rho"], parts.shape[0]))
        c_ref = math.sqrt(gp.predicted_cos_independent(gp.snr(ref_parts)["rho"], ref_parts.shape[0]))
        check |= {"cos_all_vs_autodiff": measured, "expected_if_unbiased": c_est * c_ref}
        check["bias_flag"] = bool(measured < c_est * c_ref - 0.1)
    return check


def _fitness(parts: dict[str, np.ndarray]) -> dict[str, float]:
    """Spread of the partners' losses: pair means (task noise) vs half-differences (perturbation signal)."""
    lp, lm = parts["loss_plus"], parts["loss_minus"]
    task_var, pert_var = float(np.var(0.5 * (lp + lm))), float(np.mean((0.5 * (lp - lm)) ** 2))
    return {
        "mean": float(np.mean(np.concatenate([lp, lm]))),
        "task_var": task_var,
        "perturbation_var": pert_var,
        "perturbation_share": pert_var / (pert_var + task_var) if pert_var + task_var > 0 else float("nan"),
        "clipped_truncation_frac": float(np.mean(parts["clipped"])),
        "nonfinite_steps": int(np.sum(parts["nonfinite"])),
    }


def _rows(parts: dict, ref: np.ndarray | None, estimators: list, main: str, checks: dict, opts: dict, k: int) -> list:
    """One row per population size: the main estimator's cosines, and every estimator's."""
    from evolopt import gradient_probe as gp

    per_est = {e: _block_stats(parts[e], ref, opts["pairs"], k, opts["repeats"]) for e in estimators}
    rows = []
    for i, p in enumerate(opts["pairs"]):
        row = {"pairs": p, "population_size": 2 * p, "particles": p * k, "estimator": main, **per_est[main][i]}
        row["cos_independent_predicted"] = gp.predicted_cos_independent(checks[main]["rho"], p * k)
        for e in estimators:
            row[f"cos_autodiff_{e}"] = per_est[e][i]["cos_autodiff"]
            row[f"cos_independent_{e}"] = per_est[e][i]["cos_independent"]
        rows.append(row)
    return rows


def diagnose(cfg: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """Run every measurement for a composed train config; returns the report dict."""
    import jax

    from evolopt import gradient_probe as gp
    from evolopt.loop import build

    trainer, theta = build(cfg)
    sigma = cfg.strategy.get("sigma")
    if sigma is None:
        raise ConfigError(f"strategy '{cfg.strategy.name}' has no sigma option; diagnose needs a Gaussian ES")
    k, main = cfg.tasks_per_member, opts["estimator"]
    if main == "auto":
        main = "pes" if cfg.strategy.name in ("pes", "nres") else "truncated"
    probe = gp.Probe(
        trainer.family, trainer.lopt, trainer.unroll_cfg, theta, float(sigma), opts["truncations"], opts["warmup"],
        opts["chunk"],
    )  # fmt: skip
    k_es, k_ref, k_gap, k_bias = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 0xD1A6), 4)
    parts = gp.es_particles(probe, k_es, opts["repeats"] * max(opts["pairs"]) * k, full=opts["full"])
    notes: list[str] = []
    ref_parts = None
    if opts["autodiff"] == "true" or (opts["autodiff"] == "auto" and not trainer.family.stateful):
        n_ref = opts["ref_particles"] or max(opts["pairs"]) * k
        ref_parts = _reference(probe, k_ref, n_ref, opts["autodiff"], notes)
    ref = None if ref_parts is None else ref_parts.mean(0)
    estimators = [e for e in gp.ESTIMATORS if e in parts]
    if opts["inject_bias"] > 0:
        parts[main] = _inject_bias(parts[main], ref, opts["inject_bias"], k_bias)
        notes.append(f"inject_bias={opts['inject_bias']}: a fixed bias was added to every {main} estimate")
    checks = {e: _estimator_check(parts[e], ref_parts, k) for e in estimators}
    tasks, steps = opts["gap_tasks"] or cfg.evaluation.num_tasks, opts["gap_steps"] or cfg.evaluation.steps
    gap, descent = [], []
    if opts["sigmas"]:
        gap = gp.smoothing_gap(probe, k_gap, opts["sigmas"], max(1, opts["gap_samples"]), tasks, steps)
    if opts["radii"]:
        dirs = {e: parts[e].mean(0) for e in estimators} | ({} if ref is None else {"autodiff": ref})
        descent = gp.line_search(probe, k_gap, dirs, opts["radii"], tasks, steps)
    report = {
        "theta_init": str(cfg.get("theta_init", "random")),
        "arch": cfg.arch.name,
        "task_family": cfg.task_family.name,
        "strategy": cfg.strategy.name,
        "sigma": float(sigma),
        "tasks_per_member": k,
        "truncations": opts["truncations"],
        "warmup": opts["warmup"],
        "theta_dims": int(probe.flat.size),
        "rows": _rows(parts, ref, estimators, main, checks, opts, k),
        "estimators": checks,
        "fitness": _fitness(parts),
        "smoothing_gap": gap,
        "descent_steps": descent,
        "notes": notes,
    }
    grads = {e: parts[e] for e in estimators} | ({} if ref_parts is None else {"autodiff": ref_parts})
    report["gradients"] = ga.summarize(grads, int(cfg.seed))  # gradients.npz, for compare=
    if ref_parts is not None:
        half = ref_parts.shape[0] // 2
        ref_self = gp.cosine(ref_parts[:half].mean(0), ref_parts[half:].mean(0))
        report["autodiff"] = {"particles": int(ref_parts.shape[0]), "cos_halves": ref_self, **gp.snr(ref_parts)}
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.3f}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables (also what the CLI prints)."""
    cols = ["pairs", "population_size", "cos_autodiff", "cos_independent", "cos_independent_predicted"]
    cols += ["cos_mean_of_rest", "cos_autodiff_sign"] + [c for c in report["rows"][0] if c.startswith("cos_autodiff_")]
    cols = list(dict.fromkeys(c for c in cols if c != "cos_autodiff_sign")) + ["cos_autodiff_sign"]
    head = (
        f"# ES gradient diagnosis: {report['arch']} on {report['task_family']}, theta_init={report['theta_init']}\n\n"
        f"strategy {report['strategy']}, sigma {report['sigma']}, {report['tasks_per_member']} tasks per member, "
        f"{report['truncations']} scored truncations after {report['warmup']} warm-up, {report['theta_dims']} dims; "
        f"main estimator: {report['rows'][0]['estimator']}\n\n"
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in report["rows"]]
    est_cols = ["rho", "pairs_for_cos_0.5", "pairs_for_cos_0.9", "cos_all_vs_autodiff", "expected_if_unbiased"]
    est_cols += ["bias_flag"]
    lines += ["", "| estimator | " + " | ".join(est_cols) + " |", "|---|" + "---|" * len(est_cols)]
    for e, c in report["estimators"].items():
        lines.append(f"| {e} | " + " | ".join(_fmt(c.get(x)) for x in est_cols) + " |")
    if "autodiff" in report:
        a = report["autodiff"]
        lines += ["", f"autodiff reference: {a['particles']} particles, cosine of its halves {a['cos_halves']:.3f}"]
    f = report["fitness"]
    lines += [
        "",
        f"fitness: mean {f['mean']:.4f}, task variance {f['task_var']:.3g}, perturbation variance "
        f"{f['perturbation_var']:.3g} (share {f['perturbation_share']:.3f}); truncations at loss_clip "
        f"{f['clipped_truncation_frac']:.3f}; non-finite steps {f['nonfinite_steps']}",
    ]
    if report["smoothing_gap"]:
        gcols = ["sigma", "loss_theta", "loss_perturbed", "gap", "frac_below", "curvature", "slope"]
        lines += ["", "| " + " | ".join(gcols) + " |", "|" + "---|" * len(gcols)]
        lines += ["| " + " | ".join(_fmt(g[c]) for c in gcols) + " |" for g in report["smoothing_gap"]]
    if report.get("descent_steps"):
        lines += ["", "| direction (mean of all particles) | step norm | loss at theta | loss after | change |"]
        lines += ["|---|---|---|---|---|"]
        lines += [
            f"| {d['direction']} | {d['radius']} | {d['loss_theta']:.4f} | {d['loss']:.4f} | {d['change']:+.4f} |"
            for d in report["descent_steps"]
        ]
    lines += [f"\nnote: {n}" for n in report["notes"]]
    return head + "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``diagnose.json``, ``diagnose.md`` (atomic) and TensorBoard scalars under ``out/tb``."""
    from tensorboardX import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "diagnose.md", markdown(report))
    with SummaryWriter(str(out / "tb")) as w:
        for row in report["rows"]:
            for key, v in row.items():
                if isinstance(v, float):
                    w.add_scalar(f"diagnose/{key}", v, row["pairs"])
        for i, g in enumerate(report["smoothing_gap"]):
            for key in ("sigma", "gap", "frac_below", "curvature", "slope"):
                w.add_scalar(f"smoothing_gap/{key}", g[key], i)
    if "gradients" in report:
        ga.write(out, report["gradients"])
    body = {k: v for k, v in report.items() if k != "gradients"}
    atomic_write_text(out / "diagnose.json", json.dumps(body, indent=1, allow_nan=True))  # last: marks completion


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        if any(a.startswith("compare=") for a in argv):
            return ga.main(argv)
        opts, overrides = parse_options(argv)
        from evolopt import compile_cache
        from evolopt.config import load_config

        cfg = load_config(overrides)
        compile_cache.configure(cfg.get("compile_cache", "auto"))  # before the first compile
        report = diagnose(cfg, opts)
    except ConfigError as e:
        print(f"evolopt.diagnose: error: {e}", file=sys.stderr)
        return 2
    write_report(opts["out"], report)
    print(markdown(report))
    print(f"written to {opts['out']}/diagnose.json, diagnose.md, gradients.npz, tb/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

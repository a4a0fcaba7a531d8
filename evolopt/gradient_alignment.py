"""Does a meta-gradient carry from one task distribution to another?

``python -m evolopt.diagnose compare=DIR_A,DIR_B[,DIR_C...] [out=DIR]`` reads the
``gradients.npz`` that ``evolopt.diagnose`` writes beside ``diagnose.json`` (the mean of all its
gradient particles per estimator, with their signal and noise) and prints, for the first
diagnosis against each of the others at the same theta, the cosine between the two
meta-gradients: the raw cosine of the two noisy means, and the *aligned* cosine, an estimate of
the cosine between the true gradients.

Two independent means ``a = g_a + n_a`` and ``b = g_b + n_b`` (noises of mean zero, independent
of each other) give ``E[a . b] = g_a . g_b``, and :func:`evolopt.gradient_probe.snr` estimates
``|g_a|^2`` and ``|g_b|^2`` without bias from each one's particles, so

    cos(g_a, g_b) ~= (a . b) / sqrt(|g_a|^2 |g_b|^2).

The raw cosine is shrunk toward zero by the noise of both estimates (by about the square root of
each one's expected cosine with its own true gradient); the aligned one is not. Independence
needs different perturbations: diagnoses made with the same ``seed`` draw the same ones, and
``compare`` refuses them. Meta-training on distribution A improves distribution B only as far
as ``g_A`` has a component along ``g_B``: an aligned cosine near zero says A's steps do not
move B's meta-loss at first order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from evolopt import gradient_probe as gp
from evolopt.registry import ConfigError
from evolopt.run_dir import atomic_write_text

GRADIENTS_FILE = "gradients.npz"


def summarize(particles: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """What ``gradients.npz`` keeps of each estimator's particles ``[n, D]``: the mean of all,
    the unbiased ``|g|^2`` (signal), the per-particle noise and ``n``; and the diagnosis seed."""
    out: dict[str, np.ndarray] = {"seed": np.asarray(seed)}
    for name, parts in particles.items():
        stats = gp.snr(parts)
        out[f"{name}.mean"] = parts.mean(0)
        out[f"{name}.signal"] = np.asarray(stats["signal"])
        out[f"{name}.noise"] = np.asarray(stats["noise"])
        out[f"{name}.n"] = np.asarray(parts.shape[0])
    return out


def write(out: Path, summary: dict[str, np.ndarray]) -> None:
    """``out/gradients.npz``, atomically."""
    tmp = out / f".{GRADIENTS_FILE}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **summary)
    tmp.replace(out / GRADIENTS_FILE)


def load(run: Path) -> dict[str, Any]:
    """``{"seed": int, "estimators": {name: {"mean", "signal", "noise", "n"}}}`` of one diagnosis."""
    path = Path(run) / GRADIENTS_FILE
    if not path.is_file():
        raise ConfigError(f"compare: '{run}' has no {GRADIENTS_FILE} (run evolopt.diagnose with out={run} first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: np.asarray(data[k]) for k in data.files}
        ests: dict[str, dict[str, Any]] = {}
        for key in raw:
            name, _, field = key.rpartition(".")
            if name:
                ests.setdefault(name, {})[field] = raw[key] if field == "mean" else float(raw[key])
        ok = all(set(e) == {"mean", "signal", "noise", "n"} and e["mean"].ndim == 1 for e in ests.values())
        if not ok or not ests or "seed" not in raw:
            raise ValueError("missing or misshapen fields")
        return {"seed": int(raw["seed"]), "estimators": ests}
    except (ValueError, OSError, KeyError) as e:
        raise ConfigError(f"compare: '{path}' is not a diagnose gradients file ({e})") from None


def aligned_cosine(mean_a: np.ndarray, signal_a: float, mean_b: np.ndarray, signal_b: float) -> float | None:
    """Estimated cosine between the true gradients behind two independent noisy means (module
    docstring), clipped to [-1, 1]; None where either signal is not above zero."""
    if signal_a <= 0 or signal_b <= 0:
        return None
    return float(np.clip(mean_a @ mean_b / math.sqrt(signal_a * signal_b), -1.0, 1.0))


def compare(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per (other diagnosis, estimator both have): raw and aligned cosine with the first."""
    if len(runs) < 2:
        raise ConfigError("compare needs two or more diagnose out dirs, e.g. compare=diag_a,diag_b")
    first = load(runs[0])
    rows = []
    for run in runs[1:]:
        other = load(run)
        if other["seed"] == first["seed"]:
            raise ConfigError(
                f"compare: '{runs[0]}' and '{run}' were diagnosed with the same seed={first['seed']}: the same "
                "perturbations, so their noises are not independent; rerun one with another seed="
            )
        for name in sorted(set(first["estimators"]) & set(other["estimators"])):
            a, b = first["estimators"][name], other["estimators"][name]
            if a["mean"].shape != b["mean"].shape:
                raise ConfigError(
                    f"compare: '{runs[0]}' has {a['mean'].size} theta dims and '{run}' {b['mean'].size}: "
                    "diagnose both at the same arch"
                )
            own = [gp.predicted_cos_independent(e["signal"] / e["noise"], int(e["n"])) for e in (a, b)]
            rows.append(
                {
                    "a": str(runs[0]),
                    "b": str(run),
                    "estimator": name,
                    "cos": gp.cosine(a["mean"], b["mean"]),
                    "cos_aligned": aligned_cosine(a["mean"], a["signal"], b["mean"], b["signal"]),
                    "cos_own_a": own[0],  # expected cosine of two independent estimates like a's
                    "cos_own_b": own[1],
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"meta-gradient alignment with {rows[0]['a']}" if rows else "no estimator in common",
        "",
        "| b | estimator | cos (raw) | cos (aligned) | own cos a | own cos b |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["b"], r["estimator"], f(r["cos"]), f(r["cos_aligned"]), f(r["cos_own_a"]), f(r["cos_own_b"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``compare=A,B,... [out=DIR]``: print the table; with ``out`` also write alignment.json/.md."""
    opts = dict(a.partition("=")[::2] for a in argv)
    unknown = sorted(set(opts) - {"compare", "out"})
    if unknown:
        raise ConfigError(f"compare takes only compare= and out=, not {', '.join(unknown)}")
    rows = compare([Path(p) for p in opts["compare"].split(",") if p])
    text = markdown(rows)
    print(text)
    if opts.get("out"):
        out = Path(opts["out"])
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "alignment.json", json.dumps(rows, indent=1))
        atomic_write_text(out / "alignment.md", text + "\n")
    return 0

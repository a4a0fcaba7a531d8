"""What a step of round 9's mixture costs against its members alone (README.md, "Round 9").

Times ``celo2_ns_input:muon`` on 16 tasks x 100 steps of each member and of their mixture (one jitted
evaluation each, timed after compilation). Run it on an otherwise idle machine; the ratios are what matter.

usage: python experiments/ns_input/mixture_cost.py
"""

from __future__ import annotations

import time

import jax

import evolopt.architectures  # noqa: F401
import evolopt.task_families  # noqa: F401
from evolopt.meta import make_curve_evaluator
from evolopt.registry import ARCHITECTURES, TASK_FAMILIES
from evolopt.task_families.mixture import build_member

MEMBERS = [  # as in run_layouts.sh
    {"name": "image_mlp", "datasets": ["digits", "mnist5k"], "image_size": 8, "hidden": [32, 32], "batch_size": 64},
    {"name": "image_mlp", "datasets": ["mnist5k"], "image_size": 12, "hidden": [64], "batch_size": 64},
    {"name": "image_mlp", "datasets": ["mnist1d"], "hidden": [48, 48], "activation": "tanh", "batch_size": 64},
    {"name": "regression", "input_dim": 16, "hidden": [32, 32], "activation": "silu", "batch_size": 64},
]


def seconds(family, lopt, theta) -> float:
    evaluate = make_curve_evaluator(family, lopt, 16, 100, 1.5, "both", "linear")
    jax.block_until_ready(evaluate(theta, jax.random.key(0)))  # compile
    start = time.perf_counter()
    jax.block_until_ready(evaluate(theta, jax.random.key(1)))
    return time.perf_counter() - start


def main() -> None:
    lopt = ARCHITECTURES.build("celo2_ns_input", learning_rate=0.004, adam_lr_mult=1.0)
    theta = lopt.named_inits["muon"](jax.random.key(0))
    alone = []
    for m, spec in enumerate(MEMBERS):
        family = build_member(spec, m)
        alone.append(seconds(family, lopt, theta))
        print(f"{family.name} {spec}: {alone[-1]:.2f} s")
    mixed = seconds(TASK_FAMILIES.build("mixture", members=MEMBERS), lopt, theta)
    print(f"mixture: {mixed:.2f} s = {mixed / alone[0]:.1f}x the first member, {mixed / sum(alone):.2f}x the sum")


if __name__ == "__main__":
    main()

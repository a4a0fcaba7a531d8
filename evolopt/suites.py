"""Evaluation suites: named lists of concrete tasks with a step budget each.

A suite entry names a registered family and its options, the number of inner
steps to train, and whether it lies inside the meta-training distribution of the
default recipes (8x8 image MLPs with one hidden layer of 32, ~50-2000 steps).
"""

from __future__ import annotations

import dataclasses

from evolopt.registry import ConfigError


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    name: str
    family: str
    options: dict
    steps: int
    in_distribution: bool


SUITES: dict[str, list[SuiteTask]] = {
    # Seconds on a CPU: for tests and smoke checks.
    "tiny": [
        SuiteTask("quadratic_d10", "quadratic", {"dim": 10}, 30, False),
        SuiteTask("digits_mlp32_8x8", "image_mlp", {"datasets": ["digits"], "hidden": [32]}, 30, True),
    ],
    "heldout": [
        SuiteTask("digits_mlp32_8x8", "image_mlp", {"datasets": ["digits"], "hidden": [32]}, 1000, True),
        SuiteTask("digits_mlp128x2_8x8", "image_mlp", {"datasets": ["digits"], "hidden": [128, 128]}, 1000, False),
        SuiteTask("digits_mlp32_horizon5k", "image_mlp", {"datasets": ["digits"], "hidden": [32]}, 5000, False),
        SuiteTask(
            "mnist5k_mlp64x2_16x16",
            "image_mlp",
            {"datasets": ["mnist5k"], "image_size": 16, "hidden": [64, 64]},
            1000,
            False,
        ),
        SuiteTask(
            "mnist1d_mlp64_tanh",
            "image_mlp",
            {"datasets": ["mnist1d"], "hidden": [64], "activation": "tanh"},
            1000,
            False,
        ),
        SuiteTask("digits_conv", "image_conv", {"datasets": ["digits"]}, 1000, False),
        SuiteTask("lm_char_transformer", "lm", {}, 1000, False),
        SuiteTask("rl_cartpole_ppo", "rl_gymnax", {"env": "CartPole-v1"}, 200, False),
    ],
}


def get_suite(name: str) -> list[SuiteTask]:
    if name not in SUITES:
        raise ConfigError(f"unknown suite '{name}'; valid choices: {', '.join(sorted(SUITES))}")
    return SUITES[name]

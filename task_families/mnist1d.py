"""An MNIST-1D-style data set, generated locally by our own generator (no download).

The idea follows Greydanus (2020), "Scaling down deep learning": ten fixed 1-D
template patterns are placed on a short canvas with random transformations, so
a small MLP must be invariant to them to classify well. Our generator is our
own (templates, ranges and noise model are ours, not the reference data set):

For an example of class ``c`` with template ``g_c: [0, 1] -> R`` (12 knots, linearly
interpolated), on a canvas ``u_j = j / (L - 1)``, ``j = 0..L-1`` (``L = 40``):

    width  w ~ U[0.35, 0.65]         (horizontal scale of the pattern)
    start  a ~ U[0, 1 - w]           (random shift)
    amp    A ~ U[0.7, 1.3]           (vertical scale)
    shear  h ~ U[-0.75, 0.75]        (linear trend added across the canvas)
    x_j = A * g_c((u_j - a) / w) * 1[a <= u_j <= a + w]     (zero outside the pattern)
          + h * (u_j - 0.5)
          + (smooth noise: white noise N(0, 0.3^2) convolved with a unit-sum Gaussian, sd 2 samples)
          + N(0, 0.05^2)                                   (i.i.d. noise)

Classes are balanced (``label = i mod 10``); the whole set is a pure function of
``seed``, so every run sees the same data.
"""

from __future__ import annotations

import numpy as np

LENGTH = 40


def _templates() -> np.ndarray:
    """Ten hand-made 12-knot patterns in roughly [-1, 1]: ``[10, 12]``."""
    t = np.linspace(0.0, 1.0, 12)
    bump = lambda c, s: np.exp(-0.5 * ((t - c) / s) ** 2)  # noqa: E731
    return np.stack(
        [
            np.sin(2 * np.pi * t),  # 0: one sine period
            bump(0.5, 0.12),  # 1: a single narrow bump
            2 * t - 1,  # 2: ramp up
            np.where(t < 0.5, 1.0, -1.0),  # 3: step down
            np.where((t > 0.3) & (t < 0.7), 1.0, 0.0),  # 4: square pulse
            bump(0.25, 0.08) + bump(0.75, 0.08),  # 5: two bumps
            2 * ((2 * t) % 1.0) - 1,  # 6: two sawtooth teeth
            -bump(0.5, 0.25),  # 7: a wide dip
            np.cos(4 * np.pi * t),  # 8: two cosine periods
            bump(0.2, 0.1) - bump(0.55, 0.1) + 0.5 * bump(0.85, 0.08),  # 9: up-down-up
        ]
    ).astype(np.float64)


def generate(n: int = 5000, seed: int = 0, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n, length] float32, y [n] int32)`` as described in the module docstring."""
    rng = np.random.default_rng(seed)
    templates = _templates()
    knots = np.linspace(0.0, 1.0, templates.shape[1])
    u = np.linspace(0.0, 1.0, length)
    y = (np.arange(n) % 10).astype(np.int32)
    w = rng.uniform(0.35, 0.65, n)
    a = rng.uniform(0.0, 1.0, n) * (1.0 - w)
    amp = rng.uniform(0.7, 1.3, n)
    shear = rng.uniform(-0.75, 0.75, n)
    pos = (u[None, :] - a[:, None]) / w[:, None]  # [n, L] position inside the pattern
    inside = (pos >= 0.0) & (pos <= 1.0)
    pattern = np.stack([np.interp(p, knots, templates[c]) for p, c in zip(pos, y)])
    x = amp[:, None] * pattern * inside + shear[:, None] * (u[None, :] - 0.5)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    kernel /= kernel.sum()
    white = rng.normal(0.0, 0.3, (n, length + len(kernel) - 1))
    smooth = np.stack([np.convolve(row, kernel, mode="valid") for row in white])
    x = x + smooth + rng.normal(0.0, 0.05, (n, length))
    return x.astype(np.float32), y


def resample(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of ``[n, L]`` signals to ``[n, length]`` points."""
    if x.shape[1] == length:
        return x
    src = np.linspace(0.0, 1.0, x.shape[1])
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, row) for row in x]).astype(np.float32)

"""What users feel: a whole training step of a flax transformer LM with each optimizer.

Trains a decoder-only transformer (pre-LayerNorm, causal attention, 4x MLP, untied
readout) on random tokens for ``--steps`` steps with every registered architecture (at
its initial theta) and with optax.adamw, one jitted step each (forward, backward, update).
Prints the median step time (every optimizer's steps taken in turn, so that a shared machine's drift
hits them alike) and each optimizer's overhead as a share of it:

    overhead = (step with the optimizer - step with plain SGD) / step with the optimizer

SGD's update (``p - lr g``) is the cheapest possible, so the difference is what the
optimizer itself costs inside a real step (XLA may overlap some of it with the backward).

    python benchmarks/real_model.py                      # short CPU run (~4M params)
    python benchmarks/real_model.py --preset 20m --batch 32 --seq 256 --steps 10   # ~20M params
    python benchmarks/real_model.py --cpu-reassociate   # every step jitted with evolopt.xla_cpu.REASSOCIATE,
                                                        # as a user passes compiler_options to their own jax.jit
    python benchmarks/real_model.py --cpu-reassociate --vector-width 512   # and 512-bit vectors preferred
    python benchmarks/real_model.py --no-hold-freed-memory   # glibc's default malloc

A step whose temporaries exceed 32 MB (74 MB for SGD's step here) gets them from a fresh ``mmap`` on
every step under glibc's defaults and faults them in page by page; which optimizer's step paid that
depended on its temporaries and the heap's state, and it had made SGD's reference step slower than
AdamW's (1.01-1.85x). So on Linux glibc keeps freed memory and maps such blocks on huge pages
(``host_memory.py``; SGD's step then 1.25x AdamW's in one run, its block still mapped afresh), and the
``faults`` column gives each step's minor page faults (median), ``compile s`` the seconds to jit the train
step and take its first step (what a user waits for before training starts; jax's persistent compilation cache,
``JAX_COMPILATION_CACHE_DIR``, shortens it in later processes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import host_memory  # benchmarks/ is on the path when run as a script
import jax
import jax.numpy as jnp
import optax
from host_memory import minor_faults

from evolopt import xla_cpu

PRESETS = {  # d_model, layers, heads, vocab
    "small": (256, 4, 4, 4096),
    "20m": (512, 5, 8, 4096),
}


class Block(nn.Module):
    d: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        x = x + nn.SelfAttention(num_heads=self.heads, qkv_features=self.d)(nn.LayerNorm()(x), mask=mask)
        h = nn.Dense(4 * self.d)(nn.LayerNorm()(x))
        return x + nn.Dense(self.d)(nn.gelu(h))


class TransformerLM(nn.Module):
    d: int
    layers: int
    heads: int
    vocab: int
    seq: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab, self.d)(tokens)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (self.seq, self.d))
        for _ in range(self.layers):
            x = Block(self.d, self.heads)(x)
        return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def make_training(
    model: nn.Module,
    params: Any,
    tx: optax.GradientTransformation,
    batches: jax.Array,
    steps: int,
    options: tuple[bool, int | None],
) -> Callable[[int], float]:
    """A compiled and warmed-up training run of ``tx`` (its first step taken on ``batches[0]``): a call
    ``run(i)`` takes one more train step (forward, backward, update) on ``batches[(i + 1) % len(batches)]``
    and returns its wall ms. ``options``: (reassociate, vector width), as ``evolopt.xla_cpu.jit`` takes them."""
    extra = isinstance(tx, optax.GradientTransformationExtraArgs)

    def loss_fn(p: Any, batch: jax.Array) -> jax.Array:
        logits = model.apply({"params": p}, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    def train_step(p: Any, s: Any, batch: jax.Array):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        kwargs = {"loss": loss, "num_steps": steps} if extra else {}
        u, s = tx.update(g, s, p, **kwargs)
        return optax.apply_updates(p, u), s, loss

    step = xla_cpu.jit(train_step, *options)
    carry = step(params, tx.init(params), batches[0])  # compile, and one step
    jax.block_until_ready(carry)

    def run(i: int) -> tuple[float, int]:
        nonlocal carry
        f0 = minor_faults()  # read outside the timed span (a syscall)
        t0 = time.perf_counter()
        carry = step(*carry[:2], batches[(i + 1) % len(batches)])
        jax.block_until_ready(carry)
        wall = 1e3 * (time.perf_counter() - t0)
        return wall, minor_faults() - f0

    return run


def interleaved_steps(
    runs: dict[str, Callable[[int], tuple[float, int]]], steps: int
) -> dict[str, tuple[float, float]]:
    """(median wall ms, median minor page faults) per step of each run, their steps taken in turn (a, b,
    c, a, b, c, ...), so that a shared machine's drift hits every optimizer alike instead of landing in
    the overhead column."""
    times: dict[str, list[tuple[float, int]]] = {name: [] for name in runs}
    for i in range(steps):
        for name, run in runs.items():
            times[name].append(run(i))
    return {name: tuple(statistics.median(x) for x in zip(*t)) for name, t in times.items()}


def reference_note(sgd: float, adamw: float, slack: float = 1.05) -> str | None:
    """A warning when the reference SGD step (wall ms) took more than ``slack`` x AdamW's: the overhead
    column, measured from SGD's step, then understates every optimizer's cost. Seen on CPU under glibc's
    default malloc (SGD up to 1.85x AdamW's step on the 5.3M-param LM): SGD's step faulted its 74 MB of
    temporaries in afresh each step (~20,000 faults), AdamW's only in some runs. Held (``host_memory``),
    SGD's block is still mapped afresh each step, on huge pages: 1.25x AdamW's step in one run."""
    if sgd <= slack * adamw:
        return None
    return (
        f"note: SGD's step took {sgd / adamw:.2f}x AdamW's in this run, so the overhead column (from SGD's "
        "step) understates every optimizer's cost; x adamw compares with AdamW's step directly"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--archs", help="comma-separated subset of the registered architectures")
    ap.add_argument("--cpu-reassociate", action="store_true", help="jit with evolopt.xla_cpu.REASSOCIATE")
    ap.add_argument("--vector-width", type=int, choices=xla_cpu.VECTOR_WIDTHS, help="bits XLA CPU should prefer")
    host_memory.add_option(ap, "step")
    args = ap.parse_args()
    options = (args.cpu_reassociate, args.vector_width)
    held = host_memory.hold_or_exit(ap, args.hold_freed_memory)  # before jax's first computation

    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    d, layers, heads, vocab = PRESETS[args.preset]
    model = TransformerLM(d, layers, heads, vocab, args.seq)
    key = jax.random.PRNGKey(0)
    batches = jax.random.randint(key, (4, args.batch, args.seq + 1), 0, vocab)
    params = model.init(key, batches[0, :, :-1])["params"]
    n = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"transformer LM: d={d} layers={layers} heads={heads} vocab={vocab} = {n / 1e6:.1f}M params; "
        f"batch {args.batch} x {args.seq} tokens; median of {args.steps} steps, every optimizer's in turn; "
        f"backend {jax.default_backend()}; "
        f"compile options {xla_cpu.compiler_options(options[0], vector_width=options[1]) or 'XLA defaults'}; "
        f"{held}",
        flush=True,
    )
    txs = {"sgd (reference)": optax.sgd(1e-3), "optax.adamw": optax.adamw(1e-3)}
    for name in args.archs.split(",") if args.archs else ARCHITECTURES.names():
        arch = ARCHITECTURES.build(name)
        txs[name] = arch.optimizer(arch.init_theta(jax.random.PRNGKey(0)))
    runs, first_s = {}, {}
    for name, tx in txs.items():  # progress on stderr: on a slow compiler, where a time limit cut in
        t0 = time.perf_counter()
        runs[name] = make_training(model, params, tx, batches, args.steps, options)
        first_s[name] = time.perf_counter() - t0
        print(f"  {name}: compiled, first step taken, {first_s[name]:.1f} s", file=sys.stderr, flush=True)
    ms = interleaved_steps(runs, args.steps)
    sgd, adamw = ms["sgd (reference)"][0], ms["optax.adamw"][0]
    print(f"{'optimizer':16s} {'step ms':>9s} {'overhead':>9s} {'x adamw':>8s} {'faults':>8s} {'compile s':>10s}")
    for name, (step_ms, faults) in ms.items():
        print(
            f"{name:16s} {step_ms:9.1f} {100 * (step_ms - sgd) / step_ms:8.1f}% {step_ms / adamw:7.2f}x {faults:8.0f} "
            f"{first_s[name]:10.1f}"
        )
    note = reference_note(sgd, adamw)
    if note:
        print(note)


if __name__ == "__main__":
    main()

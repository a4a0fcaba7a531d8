"""How fast μLO's per-element MLP runs as the block-by-block matmuls ``fused.wide_heads`` emits.

μLO's MLP (39 -> 32 -> 32 -> 2; 16 full-size channels reach a factored tensor's first layer)
runs on blocks of ``B`` elements as ``[32, 16] @ [16, B]``, ``[32, 32] @ [32, B]`` and
``[2, 32] @ [32, B]``. This times those three matmuls (with their ReLUs) over 2.1M elements for
several block sizes, channels-first (as ``wide_heads``) and channels-last, the whole array at
once, and one 1024^3 matmul for the machine's large-matmul rate, all compiled with
``xla_cpu.REASSOCIATE`` as meta-training compiles on CPU. Their GFLOP/s bound μLO's update from
below: the MLP alone has 13x small_fc_lopt's multiply-adds.

    python benchmarks/mulo_matmuls.py [--blocks 4096,8192,16384] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from evolopt import xla_cpu

N = 8 * 512 * 512  # elements: arch_step_time's model
C, H = 16, 32  # full-size channels of a factored tensor, hidden width
FLOPS = 2 * N * (C * H + H * H + H * 2)


def median_ms(fn, args, repeats: int) -> float:
    jitted = xla_cpu.jit(fn)
    jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def blocked(block: int, channels_last: bool):
    """The MLP over ``N`` elements, ``block`` at a time in a ``fori_loop`` (as ``fused.map_blocks``)."""

    def mlp(x, w0, w1, w2):
        if channels_last:
            x = x.T

        def body(i, out):
            if channels_last:
                xb = jax.lax.dynamic_slice(x, (i * block, 0), (block, C))
                o = jax.nn.relu(jax.nn.relu(xb @ w0.T) @ w1.T) @ w2.T
                return jax.lax.dynamic_update_slice(out, o, (i * block, 0))
            xb = jax.lax.dynamic_slice(x, (0, i * block), (C, block))
            o = w2 @ jax.nn.relu(w1 @ jax.nn.relu(w0 @ xb))
            return jax.lax.dynamic_update_slice(out, o, (0, i * block))

        init = jnp.zeros((N, 2) if channels_last else (2, N))
        return jax.lax.fori_loop(0, N // block, body, init)

    return mlp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", default="4096,8192,16384", help="comma-separated block sizes (divisors of 2^21)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    keys = jax.random.split(jax.random.key(0), 6)
    x = jax.random.normal(keys[0], (C, N))
    ws = [jax.random.normal(k, s) for k, s in zip(keys[1:4], [(H, C), (H, H), (2, H)])]
    print(f"μLO's MLP over {N:,} elements: {FLOPS / 1e9:.1f} GFLOP; backend {jax.default_backend()}")
    for block in (int(b) for b in args.blocks.split(",")):
        for last in (False, True):
            ms = median_ms(blocked(block, last), (x, *ws), args.repeats)
            layout = "channels-last " if last else "channels-first"
            print(f"blocks of {block:6d}, {layout}: {ms:7.1f} ms  {FLOPS / ms / 1e6:5.0f} GFLOP/s")
    whole = lambda x, w0, w1, w2: w2 @ jax.nn.relu(w1 @ jax.nn.relu(w0 @ x))  # noqa: E731
    ms = median_ms(whole, (x, *ws), args.repeats)
    print(f"whole array at once:           {ms:7.1f} ms  {FLOPS / ms / 1e6:5.0f} GFLOP/s")
    a, b = jax.random.normal(keys[4], (1024, 1024)), jax.random.normal(keys[5], (1024, 1024))
    ms = median_ms(lambda a, b: a @ b, (a, b), args.repeats)
    print(f"one 1024^3 matmul:             {ms:7.1f} ms  {2 * 1024**3 / ms / 1e6:5.0f} GFLOP/s")


if __name__ == "__main__":
    main()

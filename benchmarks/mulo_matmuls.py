"""How fast μLO's per-element MLP runs as the block-by-block matmuls ``fused.wide_heads`` emits.

μLO's MLP (39 -> 32 -> 32 -> 2; 16 full-size channels reach a factored tensor's first layer)
runs on blocks of ``B`` elements as ``[32, 16] @ [16, B]``, ``[32, 32] @ [32, B]`` and
``[2, 32] @ [32, B]``. This times those three matmuls (with their ReLUs) over 2.1M elements for several
block sizes, channels-first (as ``wide_heads``) and channels-last, the whole array at once,
timed in turn in one loop (``arch_step_time.interleaved``, so a shared machine's drift hits them
alike), and one 1024^3 matmul for the machine's large-matmul rate (best of, as
``arch_step_time``'s machine rates), all compiled with ``xla_cpu.REASSOCIATE`` as meta-training
compiles on CPU. Their GFLOP/s bound μLO's update from below: the MLP alone does 18x
small_fc_lopt's multiply-adds per element (1600 against 88, ``rule_costs.mlp_macs``).

    python benchmarks/mulo_matmuls.py [--blocks 4096,8192,16384] [--repeats 7]
"""

from __future__ import annotations

import argparse

import arch_step_time as timing  # benchmarks/ is on the path when this file runs as a script
import jax
import jax.numpy as jnp

N = 8 * 512 * 512  # elements: arch_step_time's model
C, H = 16, 32  # full-size channels of a factored tensor, hidden width
FLOPS = 2 * N * (C * H + H * H + H * 2)


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
    timing.OPTIONS = (True, None)  # timing.jit compiles as meta-training does on CPU (elsewhere: no options)
    calls = {}
    for block in (int(b) for b in args.blocks.split(",")):
        for last in (False, True):
            label = f"blocks of {block:6d}, {'channels-last ' if last else 'channels-first'}"
            mlp = timing.jit(blocked(block, last))
            calls[label] = lambda mlp=mlp: mlp(x, *ws)
    whole = timing.jit(lambda x, w0, w1, w2: w2 @ jax.nn.relu(w1 @ jax.nn.relu(w0 @ x)))
    calls["whole array at once"] = lambda: whole(x, *ws)
    for label, (wall, _) in timing.interleaved(calls, args.repeats).items():
        print(f"{label:30s} {wall:7.1f} ms  {FLOPS / wall / 1e6:5.0f} GFLOP/s")
    a, b = jax.random.normal(keys[4], (1024, 1024)), jax.random.normal(keys[5], (1024, 1024))
    ms = timing.best_ms(timing.jit(lambda a, b: a @ b), a, b, repeats=args.repeats)  # a machine rate: best of
    print(f"{'one 1024^3 matmul (best of)':30s} {ms:7.1f} ms  {2 * 1024**3 / ms / 1e6:5.0f} GFLOP/s")


if __name__ == "__main__":
    main()

"""The loop protocol before session 32 (every call from the same buffers: XLA copies them into the loop)
vs now (``arch_step_time.update_call``: continuing, donated), all timed in turn in one process.

    python benchmarks/results/zen4-session32/loop_protocol_probe.py adam small_fc_lopt celo2_base celo
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # benchmarks/


def main(names: list[str]) -> None:
    import host_memory

    host_memory.hold_for_benchmark(None)  # before jax's first computation, as arch_step_time.py
    import arch_step_time as bench

    bench.OPTIONS, bench.LOOP = (True, 512), 8
    params, grads = bench.make_model(8, 512)
    calls = {}
    for name in names:
        tx = bench.named_transform(name)
        calls[name + " donated"] = bench.update_call(tx, params, grads)
        state, looped = tx.init(params), bench.jit(bench.update_function(tx, 8))
        calls[name + " copied"] = bench.per_call(lambda f=looped, s=state: f(grads, s, params), 8)
    timed = bench.interleaved(calls, 30)
    for key, (wall, cpu) in timed.items():
        print(f"{key:28s} wall {wall:6.2f} ms  cpu {cpu:6.2f}")
    for name in names[1:]:
        for how in ("copied", "donated"):
            print(f"{name} / {names[0]} {how}: {timed[f'{name} {how}'][0] / timed[f'{names[0]} {how}'][0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])

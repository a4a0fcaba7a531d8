"""Round 21's probe: is the evaluation's test loss noisy because it was one 64-example batch, or because
the trained models differ?

    python experiments/ns_input/valid_batch_probe.py [HIDDEN]   # ~2 min on 2 cores

The start (`eval/celo2_muon_adam_lr_mult1.npz`) trains v2_mnist5k_mlp32_16x16 (hidden 32 by default) for
1000 steps at 4e-3 (its tuned rate on validation2), six seeds (evaluate's keys); each final model is scored
on 256 independent validation batches. Prints, per seed, one batch's loss spread and its mean (the model's
test loss), and the spread a mean of 32 batches (`evolopt.unroll.FINAL_VALID_BATCHES`) would have.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from evolopt.config import load_builtins
from evolopt.eval_grid import with_learning_rate
from evolopt.evaluate import resolve_candidate
from evolopt.registry import TASK_FAMILIES
from evolopt.unroll import UnrollConfig, new_trajectory, train_step

STEPS, RATE, DRAWS = 1000, 4e-3, 256


def main(hidden: int) -> None:
    load_builtins()
    family = TASK_FAMILIES.build("image_mlp", datasets=["mnist5k"], image_size=16, hidden=[hidden])
    start = resolve_candidate("experiments/ns_input/eval/celo2_muon_adam_lr_mult1.npz")
    lopt = with_learning_rate(start.lopt, RATE)
    cfg = UnrollConfig(STEPS, STEPS, STEPS, False, 1e30)

    @jax.jit
    def one_batch_losses(key: jax.Array) -> jax.Array:
        st = new_trajectory(key, start.theta, family, lopt, cfg)
        opt = lopt.optimizer(start.theta)
        st, _ = jax.lax.scan(lambda s, _: train_step(opt, family, s), st, length=STEPS)
        draws = jax.random.split(jax.random.key(7), DRAWS)
        return jax.vmap(lambda k: family.loss(st.params, st.task, family.valid_batch(k, st.task)))(draws)

    for seed, key in enumerate(jax.random.split(jax.random.key(1234), 6)):
        one = np.asarray(one_batch_losses(key))
        print(
            f"seed {seed}: one batch's test loss over {DRAWS} draws: mean {one.mean():.3f} sd {one.std():.3f} "
            f"range {one.min():.3f}-{one.max():.3f}; a mean of 32 batches: sd ~{one.std() / np.sqrt(32):.3f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)

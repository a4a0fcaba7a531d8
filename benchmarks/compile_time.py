"""How long a learned rule's update takes to compile, per parameter tensor, and what grouping same-shaped
tensors would save and cost.

Every rule's update is written per tensor (a Python loop over the pytree's leaves), so XLA compiles one copy
of the fused code per tensor: on the 70-tensor, 5.3M-param LM of ``real_model.py`` celo2_base's update alone
took 8.8 s to trace and lower and 44 s to compile (2-core AMD EPYC, Zen 5, session 24). This prints, per
rule, its update compiled three ways, each one's compile time and best step time, and the largest
difference of the grouped forms' updates from the unrolled one (exits 1 beyond rounding):

* ``unrolled``: the update as it is, on the model's pytree (one copy of the code per tensor);
* ``stacked``: the rule ``jax.vmap``-ed over each group of same-shaped tensors, stacked inside the jit,
  its state kept stacked per group between steps (one copy per distinct shape; a new state layout);
* ``per leaf``: the same, but the state kept one per tensor (today's layout): stacked and unstacked
  inside every step.

Tensors are N of one shape (``--tensors``, ``--shape``), or the LM's 70 (``--model lm``: 11 shapes). A probe
for a future change, not a product path.

    python benchmarks/compile_time.py [--archs celo2_base,small_fc_lopt] [--tensors 16] [--shape 256,256]
    python benchmarks/compile_time.py --model lm --archs small_fc_lopt,celo2_base
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from rule_costs import best_ms  # benchmarks/ is on the path when run as a script

from evolopt import xla_cpu


def compile_s(fn: Any, *args: Any) -> tuple[Any, float]:
    """(the compiled ``fn`` for ``args``, seconds to trace, lower and compile it)."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def shape_groups(leaves: list[jax.Array]) -> list[list[int]]:
    """Indices of the leaves, grouped by (shape, dtype), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(leaves):
        groups.setdefault((x.shape, x.dtype), []).append(i)
    return list(groups.values())


def stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def single(tx: Any, name: str) -> Any:
    """The rule on one tensor, named ``name`` (rules that route tensors by name, as celo2, see it)."""

    def one(g: jax.Array, s: Any, p: jax.Array) -> tuple[jax.Array, Any]:
        u, s = tx.update({name: g}, s, {name: p})
        return u[name], s

    return one


def grouped_update(tx: Any, treedef: Any, groups: list[list[int]], names: list[str], per_leaf: bool) -> Any:
    """``(grads, states, params) -> (updates, states)`` with the rule vmapped over each group (named as its
    first tensor); ``states``: one stacked state per group, or (``per_leaf``) one per tensor, stacked and
    unstacked inside."""

    def update(grads: Any, states: list, params: Any) -> tuple[Any, list]:
        flat_g, flat_p = treedef.flatten_up_to(grads), treedef.flatten_up_to(params)
        out: list[Any] = [None] * len(flat_g)
        new: list[Any] = [None] * len(flat_g) if per_leaf else []
        for k, idx in enumerate(groups):
            s = stack([states[i] for i in idx]) if per_leaf else states[k]
            g, p = stack([flat_g[i] for i in idx]), stack([flat_p[i] for i in idx])
            u, s = jax.vmap(single(tx, names[idx[0]]))(g, s, p)
            for j, i in enumerate(idx):
                out[i] = u[j]
                if per_leaf:
                    new[i] = jax.tree.map(lambda x, j=j: x[j], s)
            if not per_leaf:
                new.append(s)
        return treedef.unflatten(out), new

    return update


def grouped_init(tx: Any, flat_p: list, groups: list[list[int]], names: list[str], per_leaf: bool) -> list:
    """The states ``grouped_update`` takes: each tensor's, as its group's first tensor's name would have it
    (stacked per group unless ``per_leaf``)."""
    per_tensor: list[Any] = [None] * len(flat_p)
    for idx in groups:
        for i in idx:
            per_tensor[i] = tx.init({names[idx[0]]: flat_p[i]})
    return per_tensor if per_leaf else [stack([per_tensor[i] for i in g]) for g in groups]


def compare(tx: Any, params: Any, grads: Any) -> dict[str, tuple[float, float, float]]:
    """Per form, (compile s, best step ms, max |update - unrolled update|)."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in with_path]
    flat_p = [p for _, p in with_path]
    groups = shape_groups(flat_p)
    forms = {"unrolled": (tx.update, tx.init(params))}
    for name, per_leaf in (("stacked", False), ("per leaf", True)):
        forms[name] = (
            grouped_update(tx, treedef, groups, names, per_leaf),
            grouped_init(tx, flat_p, groups, names, per_leaf),
        )
    out, reference = {}, None
    for name, (fn, state) in forms.items():
        compiled, seconds = compile_s(xla_cpu.jit(fn, True, 512), grads, state, params)
        u = compiled(grads, state, params)[0]
        reference = u if reference is None else reference
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(reference)))
        out[name] = (seconds, best_ms(compiled, grads, state, params, repeats=10), diff)
    return out


def model_params(model: str, tensors: int, shape: tuple[int, ...]) -> tuple[Any, str]:
    """(params, a description): N same-shaped tensors, or the LM of ``real_model.py``."""
    if model == "lm":
        import real_model  # benchmarks/ is on the path when run as a script

        d, layers, heads, vocab = real_model.PRESETS["small"]
        lm = real_model.TransformerLM(d, layers, heads, vocab, 64)
        params = lm.init(jax.random.PRNGKey(0), jnp.zeros((1, 64), jnp.int32))["params"]
        leaves = jax.tree.leaves(params)
        return params, f"real_model.py's LM: {len(leaves)} tensors of {len(shape_groups(leaves))} shapes"
    keys = jax.random.split(jax.random.PRNGKey(1), tensors)
    return {f"w{i:03d}": jax.random.normal(keys[i], shape) for i in range(tensors)}, f"{tensors} tensors of {shape}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="celo2_base,small_fc_lopt,celo2")
    ap.add_argument("--model", choices=["same", "lm"], default="same", help="same: --tensors of --shape")
    ap.add_argument("--tensors", type=int, default=16)
    ap.add_argument("--shape", default="256,256")
    args = ap.parse_args()
    params, what = model_params(args.model, args.tensors, tuple(int(x) for x in args.shape.split(",")))
    leaves = jax.tree.leaves(params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    noise = [0.01 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    grads = jax.tree.unflatten(jax.tree.structure(params), noise)

    import evolopt.architectures  # noqa: F401  (registers every architecture)
    from evolopt.registry import ARCHITECTURES

    print(f"{what}, compiled with xla_cpu.REASSOCIATE and 512-bit vectors; compile s / best update ms")
    print(f"{'arch':14s} {'unrolled':>14s} {'stacked':>14s} {'per leaf':>14s} {'max diff':>9s}")
    worst = 0.0
    for name in args.archs.split(","):
        arch = ARCHITECTURES.build(name)
        forms = compare(arch.optimizer(arch.init_theta(jax.random.PRNGKey(0))), params, grads)
        cells = " ".join(f"{s:6.1f} /{ms:6.1f}" for s, ms, _ in forms.values())
        diff = max(d for _, _, d in forms.values())
        print(f"{name:14s} {cells} {diff:9.1e}", flush=True)
        worst = max(worst, diff)
    if worst > 1e-6:  # an update is ~1e-3 here: more than rounding means a grouped form computes another rule
        print(f"grouped and unrolled updates differ by {worst:.1e}, more than rounding", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

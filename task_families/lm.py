"""Byte-level transformer language models on a real text corpus (plain JAX).

Corpus: by default Python's own reference documentation, the ~465 kB of English
text that every CPython ships as ``pydoc_data.topics`` (PSF licence; no extra
package, no download). ``text_file=<path>`` uses the user's own file instead.
The UTF-8 bytes are the tokens (vocabulary 256); the last 10% is held out.

Model (pre-LayerNorm decoder, ``d = d_model``, ``H`` heads), for tokens ``t_1..t_T``:

    h_0 = E[t] + P[1..T]                                   embed/embedding, pos_embed/embedding
    for each block:  h += Attn(LN_0(h));  h += W_2 gelu(W_1 LN_1(h) + b_1) + b_2
    Attn(x) = concat_heads(softmax(q k^T / sqrt(d/H) + causal mask) v) W_o + b_o,
              q, k, v = x W_{q,k,v} + b_{q,k,v}
    logits = LN_f(h) W_head + b_head

``loss = mean_t -log softmax(logits_t)[t_{t+1}]`` (next-byte cross-entropy);
``loss_scale = log(256)``, the loss of a uniform prediction. Kernels are truncated
normal with std 1/sqrt(fan_in) except the readout (std 0.1/sqrt(d), so an untrained
model predicts near-uniformly); embeddings N(0, 1/d); LayerNorm scale 1, bias 0.
Params use flax-linen names (kernel, bias, embedding, scale).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from evolopt.contracts import TaskFamily, example_mean, require_positive
from evolopt.registry import ConfigError, register_task_family

VOCAB = 256
CORPORA = ("python_docs",)


def python_docs_text() -> str:
    """The topics of Python's reference manual (``pydoc_data.topics``), joined in sorted order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        raise ConfigError(
            "corpus 'python_docs' needs the standard library's pydoc_data; pass task_family.text_file=<path>"
        ) from None
    return "\n\n".join(topics[k] for k in sorted(topics))


def corpus_bytes(corpus: str, text_file: str) -> np.ndarray:
    """The corpus as a uint8 array of UTF-8 bytes."""
    if text_file:
        path = Path(text_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"task_family.text_file='{text_file}' is not a file")
        raw = path.read_bytes()
    elif corpus in CORPORA:
        raw = python_docs_text().encode("utf-8")
    else:
        raise ConfigError(
            f"unknown corpus '{corpus}'; valid choices: {', '.join(CORPORA)} (or task_family.text_file=<path>)"
        )
    return np.frombuffer(raw, np.uint8)


def _dense(key: jax.Array, n_in: int, n_out: int, std: float | None = None) -> dict:
    std = 1.0 / math.sqrt(n_in) if std is None else std
    return {
        "kernel": jax.random.truncated_normal(key, -2.0, 2.0, (n_in, n_out)) * std / 0.8796,
        "bias": jnp.zeros(n_out),
    }


def _ln(d: int) -> dict:
    return {"scale": jnp.ones(d), "bias": jnp.zeros(d)}


def init_transformer(key: jax.Array, d: int, num_layers: int, seq_len: int, mlp_ratio: int) -> dict:
    """Params of the model in the module docstring."""
    keys = iter(jax.random.split(key, 3 + 6 * num_layers))
    params = {
        "embed": {"embedding": jax.random.normal(next(keys), (VOCAB, d)) / math.sqrt(d)},
        "pos_embed": {"embedding": jax.random.normal(next(keys), (seq_len, d)) / math.sqrt(d)},
    }
    for i in range(num_layers):
        attn = {name: _dense(next(keys), d, d) for name in ("query", "key", "value", "out")}
        mlp = {"dense_0": _dense(next(keys), d, mlp_ratio * d), "dense_1": _dense(next(keys), mlp_ratio * d, d)}
        params[f"block_{i}"] = {"ln_0": _ln(d), "attn": attn, "ln_1": _ln(d), "mlp": mlp}
    params["ln_f"] = _ln(d)
    params["head"] = _dense(next(keys), d, VOCAB, std=0.1 / math.sqrt(d))
    return params


def layer_norm(p: dict, x: jax.Array, eps: float = 1e-6) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def attention(p: dict, x: jax.Array, num_heads: int) -> jax.Array:
    """Causal multi-head self-attention on ``x [batch, T, d]``."""
    b, t, d = x.shape
    proj = lambda name: (x @ p[name]["kernel"] + p[name]["bias"]).reshape(b, t, num_heads, d // num_heads)  # noqa: E731
    q, k, v = proj("query"), proj("key"), proj("value")
    scores = jnp.einsum("bthe,bshe->bhts", q, k) / math.sqrt(d // num_heads)
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e9)
    out = jnp.einsum("bhts,bshe->bthe", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, d)
    return out @ p["out"]["kernel"] + p["out"]["bias"]


def apply_transformer(params: dict, tokens: jax.Array, num_heads: int) -> jax.Array:
    """``tokens [batch, T] -> logits [batch, T, 256]``."""
    h = params["embed"]["embedding"][tokens] + params["pos_embed"]["embedding"][: tokens.shape[1]]
    i = 0
    while f"block_{i}" in params:
        blk = params[f"block_{i}"]
        h = h + attention(blk["attn"], layer_norm(blk["ln_0"], h), num_heads)
        m = layer_norm(blk["ln_1"], h)
        m = jax.nn.gelu(m @ blk["mlp"]["dense_0"]["kernel"] + blk["mlp"]["dense_0"]["bias"])
        h = h + m @ blk["mlp"]["dense_1"]["kernel"] + blk["mlp"]["dense_1"]["bias"]
        i += 1
    return layer_norm(params["ln_f"], h) @ params["head"]["kernel"] + params["head"]["bias"]


def next_token_loss(logits: jax.Array, targets: jax.Array, batch: dict | None = None) -> jax.Array:
    """Mean cross-entropy of ``logits [B, T, V]`` against integer ``targets [B, T]``
    (examples weighted by ``batch["weights"]`` if given, see :func:`example_mean`)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return example_mean(-jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], batch or {})


@register_task_family("lm")
def lm(
    *,
    corpus: str = "python_docs",
    text_file: str = "",
    seq_len: int = 32,
    batch_size: int = 16,
    d_model: int = 32,
    num_heads: int = 2,
    num_layers: int = 1,
    mlp_ratio: int = 4,
) -> TaskFamily:
    """Byte-level transformer LMs on ``corpus`` (or ``text_file``); windows of ``seq_len`` bytes."""
    require_positive(
        seq_len=seq_len,
        batch_size=batch_size,
        d_model=d_model,
        num_heads=num_heads,
        num_layers=num_layers,
        mlp_ratio=mlp_ratio,
    )
    if d_model % num_heads:
        raise ConfigError(f"task_family.d_model={d_model} must be divisible by num_heads={num_heads}")
    data = corpus_bytes(corpus, text_file)
    n_valid = len(data) // 10
    if n_valid < seq_len + 2:
        raise ConfigError(f"the text has {len(data)} bytes; need at least {10 * (seq_len + 2)} for seq_len={seq_len}")
    splits = {"train": jnp.asarray(data[:-n_valid]), "valid": jnp.asarray(data[-n_valid:])}

    def sample_task(key):
        del key
        return {}

    def init_params(key, task):
        del task
        return init_transformer(key, d_model, num_layers, seq_len, mlp_ratio)

    def batch_from(split):
        text = splits[split]

        def sample(key, task):
            del task
            starts = jax.random.randint(key, (batch_size, 1), 0, len(text) - seq_len - 1)
            return {"tokens": text[starts + jnp.arange(seq_len + 1)].astype(jnp.int32)}

        return sample

    def loss(params, task, batch):
        tokens = batch["tokens"]
        return next_token_loss(apply_transformer(params, tokens[:, :-1], num_heads), tokens[:, 1:], batch)

    return TaskFamily(
        "lm",
        sample_task,
        init_params,
        batch_from("train"),
        loss,
        math.log(VOCAB),
        batch_from("valid"),
        batch_size=int(batch_size),
    )

"""Reading the authors' published ``theta.state`` files: flax ``to_bytes`` msgpack, as data.

flax.serialization stores an ndarray (or numpy scalar) as a msgpack ExtType whose
payload is msgpack of ``(shape, dtype name, C-order bytes)``. We decode exactly that,
with plain msgpack (no flax, no pickle), and refuse anything else with one line.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

EXT_NDARRAY, EXT_NPSCALAR = 1, 3
DTYPES = ("float16", "float32", "float64", "bfloat16", "int32", "int64")


def decode_ext(code: int, data: bytes) -> np.ndarray:
    import msgpack

    if code not in (EXT_NDARRAY, EXT_NPSCALAR):
        raise ValueError(f"unsupported msgpack extension type {code}")
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else str(dtype_name)
    if name not in DTYPES:
        raise ValueError(f"unsupported array dtype '{name}'")
    dtype = jnp.bfloat16 if name == "bfloat16" else np.dtype(name)
    arr = np.frombuffer(buffer, dtype=dtype).reshape([int(s) for s in shape])
    return arr.astype(np.float32)


def read_state(path: str, what: str) -> Any:
    """The nested dict of float32 arrays in a flax msgpack file; ValueError naming ``what`` if unreadable."""
    import msgpack

    with open(path, "rb") as f:
        raw = f.read()
    try:
        return msgpack.unpackb(raw, ext_hook=decode_ext, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for truncated/garbled input
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable {what} theta.state ({reason})") from None


def write_state(tree: Any, path: str) -> None:
    """Write a nested dict of arrays as ``flax.serialization.to_bytes`` would (readable by flax)."""
    import jax
    import msgpack

    def encode(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            payload = msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(EXT_NDARRAY, payload)
        raise TypeError(f"cannot serialise {type(x).__name__}")

    tree = jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
    with open(path, "wb") as f:
        f.write(msgpack.packb(tree, default=encode, strict_types=True))

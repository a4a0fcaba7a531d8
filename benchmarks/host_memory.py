"""Page faults of a jitted call on CPU, and keeping them out of a benchmark.

XLA CPU allocates each call's output and temporary buffers with ``malloc``. glibc hands freed memory
back to the kernel (it trims the heap's free top, and ``munmap``s blocks above its mmap threshold), so
the next call's buffers fault every page in again, each one zeroed by the kernel. One optax.adam update
of 2.1M params writes ~25 MB (updates, m, v): called alone from Python it took 2,000-4,000 minor faults
(8-16 MB of pages) and 5-9 ms, against ~40 faults and ~2.3 ms with the memory held (2-core AMD EPYC,
Zen 3, glibc 2.36). Which calls fault depends on the heap's state, so it moved between runs and rows: a
learned rule's update faulted 0-4,900 pages per call, and the optimizer-shaped stream that sets
``arch_step_time.py``'s byte floors measured 5.9-7.0 GB/s in 4 of 5 runs (25.5 in the fifth) against
16-23 GB/s held. A training loop inside one jit (meta-training, ``arch_step_time.py --loop K``) keeps
its buffers and barely sees it; a whole LM train step (``real_model.py``) faulted ~10k pages per step
either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top glibc keeps before trimming
MMAP_THRESHOLD = 32 << 20  # blocks up to this come from the heap; glibc's largest allowed value


def hold_freed_memory() -> str | None:
    """Have glibc keep freed memory for reuse: no heap trimming below ``TRIM_THRESHOLD`` of free top,
    and blocks up to ``MMAP_THRESHOLD`` from the heap, not ``mmap``. Call it before jax allocates.

    Returns:
      ``None`` when held; otherwise why not, in one line (a C library without glibc's ``mallopt``).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return "this C library has no mallopt (glibc, Linux)"
    if not (mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        return "this C library's mallopt refused the thresholds"
    return None


def minor_faults() -> int:
    """This process's minor page faults so far (0 where ``resource`` is missing: Windows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0

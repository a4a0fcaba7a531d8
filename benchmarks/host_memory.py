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
either way (session 23).

That step's temporary buffer is larger than any mmap threshold glibc allows (74 MB for SGD's step on
the 5.3M-param LM; the threshold stops at 32 MB), so glibc ``mmap``s it afresh on every step and the
kernel faults it in page by page: ~20,000 faults per step, and SGD's step took 66-68 ms against 50-56
ms with the block held (2-core AMD EPYC, Zen 5, glibc 2.36). Which optimizer's step paid it depended on
its temporaries' size and the heap's state: it made ``real_model.py``'s reference SGD step slower than
AdamW's (up to 1.85x), while adam_hparams, the same rule as AdamW, ran at half AdamW's step. Holding
such blocks by putting every thread on one arena with ``mmap`` off (``M_ARENA_MAX`` 1, ``M_MMAP_MAX``
0) cost the learned rules more than it saved (celo2's step 145 -> 192 ms, no faults either way).
glibc's ``hugetlb`` tunable (glibc 2.35+) instead maps such blocks on transparent huge pages, each
fault bringing in 2 MB: SGD's step alone 56 ms, celo2's 133 ms; in a whole ``real_model.py`` run ~270
faults per SGD step, and SGD's step 1.25x AdamW's (its block is still mapped and zeroed afresh). A
tunable is read when the process starts, so ``with_huge_pages`` starts the benchmark again with it set.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import os
import sys

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top glibc keeps before trimming
MMAP_THRESHOLD = 32 << 20  # blocks up to this come from the heap; glibc's largest allowed value


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once (``find_library`` may run a subprocess)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def hold_freed_memory() -> str | None:
    """Have glibc keep freed memory for reuse: no heap trimming below ``TRIM_THRESHOLD`` of free top,
    and blocks up to ``MMAP_THRESHOLD`` from the heap, not ``mmap``. Call it before jax allocates.

    Returns:
      ``None`` when held; otherwise why not, in one line (a C library without glibc's ``mallopt``).
    """
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return "this C library has no mallopt (glibc, Linux)"
    if not (mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        return "this C library's mallopt refused the thresholds"
    return None


def minor_faults() -> int:
    """This process's minor page faults so far (0 where ``resource`` is missing: Windows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


HUGE_PAGES = "glibc.malloc.hugetlb=1"  # glibc maps its mmap'ed blocks with madvise(MADV_HUGEPAGE)
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def with_huge_pages() -> str | None:
    """Start this process again (``os.execve``, same arguments) with ``HUGE_PAGES`` added to
    ``GLIBC_TUNABLES``, unless it is there already; call it first, before any work.

    Returns:
      ``None`` once the process runs with the tunable; otherwise why not, in one line (not Linux,
      transparent huge pages off, or a C library other than glibc 2.35+). Does not return when it
      starts the process again.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES in tunables.split(":"):
        return None
    try:
        with open(THP_SETTING) as f:
            if "[never]" in f.read():
                return "transparent huge pages are off on this machine"
    except OSError:
        return "no transparent huge pages here (Linux only)"
    try:
        version = _libc().gnu_get_libc_version
        version.restype = ctypes.c_char_p
        major, minor = (int(x) for x in version().decode().split(".")[:2])
    except (OSError, AttributeError, ValueError):
        return "this C library is not glibc"
    if (major, minor) < (2, 35):
        return f"glibc {major}.{minor} has no hugetlb tunable (2.35+)"
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, HUGE_PAGES])))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    return None  # not reached


def hold_for_benchmark(requested: bool | None) -> tuple[str, str | None]:
    """A benchmark's ``--hold-freed-memory`` (``requested``; ``None``: on Linux): ``with_huge_pages``
    (which may start the process again) then ``hold_freed_memory``.

    Returns:
      (what the run's header says about memory, why an explicit request could not be met or None).
    """
    if not (requested or (requested is None and sys.platform == "linux")):
        return "C library's default malloc", None
    no_huge_pages = with_huge_pages()
    why_not = hold_freed_memory()
    if why_not:
        return f"C library's default malloc ({why_not})", why_not if requested else None
    huge = f"no huge pages: {no_huge_pages}" if no_huge_pages else f"blocks over 32 MB on huge pages ({HUGE_PAGES})"
    return f"freed memory held (mallopt), {huge}", None


def add_option(ap: argparse.ArgumentParser, each: str) -> None:
    """A benchmark's ``--hold-freed-memory`` / ``--no-hold-freed-memory`` (``each``: what is timed, e.g. "call")."""
    ap.add_argument(
        "--hold-freed-memory",
        action=argparse.BooleanOptionalAction,
        help=f"glibc keeps freed memory and maps large blocks on huge pages, so each {each} does not fault its "
        "buffers in again page by page (default: on Linux)",
    )


def hold_or_exit(ap: argparse.ArgumentParser, requested: bool | None) -> str:
    """``hold_for_benchmark(requested)``, called before jax's first computation; an explicit request it
    cannot meet exits with one line (``ap.error``). Returns what the run's header says about memory."""
    held, failed = hold_for_benchmark(requested)
    if failed:
        ap.error(f"--hold-freed-memory: {failed}; run with --no-hold-freed-memory")
    return held

"""How a run's processes get their memory: keep what numpy frees, for the next partition.

Every partition allocates and frees the same few large arrays (tens to
hundreds of MB). By default glibc's malloc gives each of them fresh pages
from the kernel (``mmap``) and hands them back on free, so every partition
pays a page fault per page touched again: on this project's 2-core VM that
was a quarter of a 100,000-meter run (``docs/scale.md``). With
:func:`reuse_freed_memory` large blocks come from the heap and freed memory
stays in the process, so the next partition reuses pages already mapped.

The price is that a process holds its high-water mark until it exits, which
the memory budget already allows for: the peak is what it was, only held
for longer (in a Dask run the workers' peaks no longer need to coincide to
add up).

A Dask worker gives what it has freed back at the end of each pass
(:func:`release_freed_memory`, called by :mod:`gridwatch.cluster`), so that
the workers' high-water marks do not add up with the client's while it
gathers and merges the results: at 100k meters the run's peak fell from
3.5 to 3.0 GB, for about 1 s.

Arrow's buffers (a table read from Parquet or CSV) go through the same
malloc: by default pyarrow allocates with its bundled mimalloc, which maps
fresh (transparent huge) pages and gives them back behind the caller's
back, so those pages were faulted in again and again. Reading 44 M readings
(10,000 meters x 92 days half-hourly) spent 2.5-5 s in the kernel that way
and 0.8-1 s with the system pool (issue 15; ``bench/bench_floor.py``).

Only glibc (Linux) is affected; elsewhere these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3

LARGE_BYTES = 2**31 - 1
"""Threshold for both settings [bytes]: no block is that large, so none is mmapped or trimmed."""

ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(LARGE_BYTES), "MALLOC_TRIM_THRESHOLD_": str(LARGE_BYTES),
           "ARROW_DEFAULT_MEMORY_POOL": "system"}
"""The same settings for a process about to start (read by glibc at its first allocation,
by pyarrow when it first allocates)."""


@functools.cache
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:  # pragma: no cover - no C library by that name
        return None


def reuse_freed_memory() -> bool:
    """Keep large freed blocks in this process for reuse (glibc ``mallopt``).

    Arrow's later allocations use the same malloc (:func:`arrow_uses_malloc`).

    Returns
    -------
    bool
        True when both settings took effect; False on another C library.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(LARGE_BYTES))
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(LARGE_BYTES))
    if ok:
        arrow_uses_malloc()
    return bool(ok)


def arrow_uses_malloc() -> bool:
    """Make pyarrow allocate its later buffers with the C library's malloc (its system pool).

    Returns
    -------
    bool
        True when the system pool is pyarrow's default now; False without pyarrow.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name == "system"


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the kernel (glibc ``malloc_trim``).

    Returns
    -------
    bool
        True when some memory was released; False otherwise or on another C library.
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False

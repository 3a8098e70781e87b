"""Process-wide CPU allocator setting that keeps freed memory for reuse.

glibc serves every allocation above its mmap threshold (128 KiB to 32 MiB, adaptive) with fresh
pages from the kernel and unmaps them on free. A training step allocates and frees hundreds of
activation buffers of 8-200 MB, so each step pays for the kernel zeroing those pages again; on
the 2-core machines of this project that was ~40% of a CPU training step at the paper's size
(``benchmarks/bench_model.py`` measures it: its "memory" variant). Raising the threshold and the trim
limit makes glibc keep freed blocks in the heap and hand them out again, as caching allocators do on
GPUs. The process keeps its peak resident size until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 2**31 - 1
_retained = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse; returns whether the setting is in effect.

    Idempotent; a no-op returning ``False`` where the C library is not glibc (macOS, musl, Windows).
    """
    global _retained
    if _retained:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _retained = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
    return _retained

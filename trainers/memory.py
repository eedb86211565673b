"""Give a long-lived process's freed memory back to the operating system between training runs.

A reused trial worker trains hundreds of configurations one after another. glibc's allocator keeps the memory
a run freed (its arenas grow to the largest run's peak and stay there, fragmented), so a worker's resident
memory climbed to the high-water mark of its heaviest trials and beyond: 5-6 GB after 60 trials of the `cpu`
space where one trial needs about 1 GB at its peak. `release_memory` collects Python's garbage and asks glibc
to return free pages (`malloc_trim(0)`); measured on the phantom, a worker is back at about 1.2 GB after an
HRNet trial instead of 1.9 GB (bench.soak follows it over a long search). Elsewhere (macOS, musl) it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the OS; True when glibc's malloc_trim ran."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True

"""Process settings for CPU training, applied by the command-line tools (and the benchmarks and
tests); a library user may call them too.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start, adjusted up to 32 MiB) with
fresh pages and unmaps them on free, and trims the heap's top. A training step that allocates the
same multi-megabyte activations every step then faults fresh zeroed pages in every step: a third
of a 32-model CNN-s population step on 2 cores (BENCHMARKS.md). ``keep_freed_memory`` has malloc
serve those blocks from its heap and keep what is freed for reuse.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
HEAP_BLOCKS_UP_TO = 256 << 20  # bytes: larger blocks still get their own mapping
TRIM_ABOVE = 1 << 30  # bytes free at the heap's top before any goes back to the system


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it; False where the C
    library is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    heap = mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO)  # 0 where glibc refuses the value
    kept = mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE)
    return bool(heap and kept)

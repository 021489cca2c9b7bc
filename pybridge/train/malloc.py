"""Opt-in glibc malloc tuning for CPU training (fewer page faults from per-step temporaries)."""

from __future__ import annotations

import ctypes
import functools
import os
import sys


@functools.cache
def keep_freed_buffers_in_heap() -> bool:
    """Ask glibc to keep freed buffers up to 64 MB in the heap (trimmed back to the OS past 256 MB).

    Each step allocates and frees [cells x genes] temporaries of a few MB; with glibc's defaults they are mapped
    and unmapped from the OS every step, and the page faults cost CPU time (bench/RESULTS.md). Process-wide, done
    once, and only when PYBRIDGE_MALLOC_TUNING=1: a library must not change the allocator of the process that
    imports it (an R session, a notebook), so it is opt-in; the ``pybridge`` command, which owns its process,
    opts in. Returns whether the setting was applied.
    """
    if os.environ.get("PYBRIDGE_MALLOC_TUNING", "0") != "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False

"""``reuse_cpu_memory``: keep the memory a CPU run frees for its next step.

glibc's malloc serves each large request (above 32 MB at most) with a fresh mmap and hands
it back to the system when it is freed. A training step of a large model frees and asks
again for the same large buffers every step (autocast's bf16 copies of the weights, the
gradients, the logits, a tied embedding's dense gradient), so every step touches gigabytes
of new pages, each faulted in and zeroed by the kernel before torch writes it. Measured on
a Qwen2.5-0.5B-shaped bf16 fine-tune step (2-core AMD EPYC, bench/finetune.py): 4.0 to 5.5 s
as glibc leaves it, 2.0 to 2.4 s with freed memory kept, for 4% more peak memory.

The usual cure is preloading jemalloc or tcmalloc (LD_PRELOAD), which a run cannot do to
its own process; glibc's ``mallopt`` gets the same effect from inside it: no mmap for large
blocks (they come from the heap) and no trimming of the heap's free top (what is freed
stays for the next step). Elsewhere (macOS, musl) nothing changes. Which allocator serves a
buffer changes no number a run computes.

The heap takes a few steps to reach its size: torch asks for aligned memory, and glibc's
memalign needs a freed buffer's size plus the alignment, so the hole one buffer leaves fits
the next of the same size only once freed neighbours have merged with it. Until then the
heap grows (measured with four 48 MB buffers a step: it grew for two to four steps, each by
about a step's buffers, then took no new pages; the 0.5B fine-tune's heap grows 0.2 GB after
its first step, then holds). What the holes cost at the peak, `bench/finetune.py --heap`
prints: for the 0.5B bf16 fine-tune, 1.44 GB held beyond the 6.64 GB in use.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Callable

# mallopt's parameters (malloc.h) and glibc's defaults for them (mallopt(3)).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NO_TRIMMING = -1  # mallopt(3): "-1 disables trimming completely"


def reuse_freed_memory(enabled: bool) -> tuple[str, Callable[[], None]]:
    """Keep freed memory in this process (where ``enabled`` and glibc is the C library).
    Returns what was done, for the run's metadata, and the call that gives the kept memory
    back and restores glibc's defaults, for the end of the run (a process may run more)."""
    if not enabled:
        return "system default (reuse_cpu_memory off)", _nothing
    libc = _glibc()
    if libc is None:
        return "system default (not glibc)", _nothing
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIMMING)):
        return "system default (mallopt refused)", _nothing

    def give_back() -> None:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)

    return "glibc heap, freed memory kept for reuse", give_back


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _nothing() -> None:
    pass

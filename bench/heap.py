"""How much of a process's peak memory is data and how much is the allocator's slack.

A CPU run keeps freed memory for reuse (reuse_cpu_memory), so its peak RSS is the high-water
mark of glibc's heap, not of the tensors alive at any moment: a freed buffer leaves a hole
that a later, larger request cannot use, and the heap grows past it. ``HeapSampler`` polls
glibc's ``mallinfo2`` from a background thread and keeps the largest "in use" (bytes handed
out by malloc, mmapped blocks included) and "held" (bytes the heaps and mmapped blocks take
from the system) it saw. Held minus in use at their peaks is what fragmentation costs.

``mallinfo2`` walks every free list under the arena's lock, so polling slows the steps a
little: figures taken with it are for memory, not time. It needs glibc 2.33 or newer; on any
other C library the sampler reports nothing.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import threading

# struct mallinfo2 (malloc.h): ten size_t fields, in this order.
_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def _mallinfo2():
    """glibc's mallinfo2 function, or None where there is none."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    function.restype = _MallInfo2
    return function


class HeapSampler:
    """``with HeapSampler() as heap: ...``; then ``heap.peak_in_use`` and ``heap.peak_held``
    in bytes (None where mallinfo2 is missing)."""

    def __init__(self, interval_s: float = 0.003):
        self.interval_s = interval_s
        self.peak_in_use: int | None = None
        self.peak_held: int | None = None
        self._read = _mallinfo2()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HeapSampler:
        if self._read is not None:
            self.peak_in_use = self.peak_held = 0
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._read is not None:
            self._stop.set()
            self._thread.join()
            self._sample()  # the state at the end counts too

    def peaks_gb(self) -> list[float] | None:
        """[peak in use, peak held] in GB, or None where mallinfo2 is missing."""
        if self.peak_held is None:
            return None
        return [self.peak_in_use / 1e9, self.peak_held / 1e9]

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        info = self._read()
        self.peak_in_use = max(self.peak_in_use, info.uordblks + info.hblkhd)
        self.peak_held = max(self.peak_held, info.arena + info.hblkhd)

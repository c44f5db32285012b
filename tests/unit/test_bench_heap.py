"""bench/heap.py: malloc's peaks as finetune.py --heap reports them."""

import importlib.util
import platform
import sys
import time
from pathlib import Path

import pytest

HEAP_PY = Path(__file__).resolve().parents[2] / "bench" / "heap.py"
spec = importlib.util.spec_from_file_location("bench_heap", HEAP_PY)
heap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heap)

on_glibc = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="mallinfo2 is glibc's"
)


@on_glibc
def test_a_buffer_alive_inside_the_block_counts_in_use_and_held():
    now = heap._mallinfo2()()
    in_use_before = now.uordblks + now.hblkhd
    with heap.HeapSampler(interval_s=0.001) as sampler:
        buffer = bytearray(300 * 2**20)  # zero-filled: its pages are touched
        time.sleep(0.05)
        del buffer
    # Within 5%: what other threads of the test process free meanwhile counts too.
    assert sampler.peak_in_use >= in_use_before + 0.95 * 300 * 2**20
    assert sampler.peak_held >= sampler.peak_in_use
    assert sampler.peaks_gb() == [sampler.peak_in_use / 1e9, sampler.peak_held / 1e9]


@on_glibc
def test_the_state_at_the_end_is_sampled_even_if_the_thread_never_polled():
    with heap.HeapSampler(interval_s=60) as sampler:
        buffer = bytearray(100 * 2**20)
    assert sampler.peak_in_use >= 100 * 2**20
    del buffer


def test_without_mallinfo2_the_sampler_reports_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_mallinfo2", lambda: None)
    with heap.HeapSampler() as sampler:
        pass
    assert sampler.peak_in_use is None and sampler.peak_held is None
    assert sampler.peaks_gb() is None

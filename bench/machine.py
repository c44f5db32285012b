"""What every benchmark prints first and shares: the machine it ran on, and how to summarise
step times taken in turns.

Figures from a shared or different CPU are not comparable, so each benchmark names the CPU,
the torch build, its thread count and the load average (the other processes on the cores).
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The matmul-relevant instruction sets: they decide which fast kernels exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def describe_machine() -> str:
    """One line: CPU, cores, flags, torch and its threads, load. Imports torch (the callers train)."""
    import torch

    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores ({cpu_flags()}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"{load_average()}"
    )


def min_median(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"

"""What the command-line benchmarks share: the median wall time of a command, as fresh processes."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path


def median_seconds(command: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)

"""Startup: the quick commands, and the time to the first training step, in one run.

    python bench/startup.py [--repeats 5] [--first-step-repeats 3]

Times fresh processes of `python main.py --help`, `list-models` (a throwaway registry with
one small model), `runs list` (a throwaway outputs/ with a few finished runs) and
`generate --help`, each against the target of under 0.3 s, next to
`python -c "import torch"`. Then starts `python main.py training=fast` and measures the
seconds from launching it to the timestamp of its first `step` event in events.jsonl (what a
user waits before the first loss), and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from machine import load_average, min_median, verdict  # bench/ is on the path
from registry_cli import make_model
from runs_cli import write_run
from timing import median_seconds

MAIN = Path(__file__).resolve().parent.parent / "main.py"
QUICK_TARGET_S = 0.3


def first_step_seconds(cwd: Path, timeout_s: float = 300) -> float:
    """Launch `main.py training=fast`; seconds until its first step event's timestamp."""
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, str(MAIN), "training=fast"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.time() - launched < timeout_s:
            for events in cwd.glob("outputs/*/*/events.jsonl"):
                for line in events.read_text().splitlines():
                    if '"event": "step"' in line:
                        ts = line.split('"ts": "', 1)[1].split('"', 1)[0]
                        return datetime.fromisoformat(ts).timestamp() - launched
            if process.poll() is not None:
                sys.exit(f"main.py training=fast exited ({process.returncode}) before its first step")
            time.sleep(0.05)
        sys.exit(f"no training step within {timeout_s:.0f} s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-step-repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        make_model(cwd / "bench-model")
        subprocess.run(
            [sys.executable, str(MAIN), "import-model", "bench-model"], cwd=cwd, check=True, capture_output=True
        )
        for n in range(5):
            write_run(cwd / "outputs" / "2026-11-25" / f"{n:02d}-00-00", 1000, n)
        quick = {
            "python main.py --help": [sys.executable, str(MAIN), "--help"],
            "python main.py list-models": [sys.executable, str(MAIN), "list-models"],
            "python main.py runs list": [sys.executable, str(MAIN), "runs", "list"],
            "python main.py generate --help": [sys.executable, str(MAIN), "generate", "--help"],
        }
        print(f"median of {args.repeats} fresh processes each (target < {QUICK_TARGET_S} s):")
        for label, command in quick.items():
            seconds = median_seconds(command, cwd, args.repeats)
            print(f"  {label:<36} {seconds:6.3f} s  {verdict(seconds < QUICK_TARGET_S)}")
        seconds = median_seconds([sys.executable, "-c", "import torch"], cwd, args.repeats)
        label = 'python -c "import torch"'
        print(f"  {label:<36} {seconds:6.3f} s  (for scale)")

    times = []
    for _ in range(args.first_step_repeats):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(first_step_seconds(Path(tmp)))
    fastest, median = min_median(times)
    print(
        f"time to the first training step of `python main.py training=fast` (launch to its first step event), "
        f"{args.first_step_repeats} runs: median {median:.2f} s, fastest {fastest:.2f} s"
    )
    print(load_average())


if __name__ == "__main__":
    main()

"""Wall time of `runs list` over many long runs, next to `--help` and importing torch, in one run.

    python bench/runs_cli.py [--runs 20] [--steps 10000] [--repeats 5]

Writes RUNS run directories of STEPS steps each (events.jsonl as a run writes it: a run_start,
a step event per step, an eval every 100 steps, a run_end) under a throwaway outputs/, then
times fresh processes of `python main.py runs list`, `runs list --json`, `--help` and
`python -c "import torch"`, and prints the median of each. `runs list` must not import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from timing import median_seconds  # bench/timing.py: python bench/X.py puts bench/ on the path

MAIN = Path(__file__).resolve().parent.parent / "main.py"


def write_run(run_dir: Path, steps: int, seed: int) -> int:
    """One completed run's events.jsonl; returns its size in bytes."""
    run_dir.mkdir(parents=True)
    started = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc) + timedelta(hours=seed)
    run_id = f"{seed:012x}"

    def line(seconds: float, event: str, step: int, **fields) -> str:
        ts = (started + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
        return json.dumps({"ts": ts, "event": event, "run_id": run_id, "step": step, **fields}) + "\n"

    config = {"max_steps": steps, "batch_size": 16, "max_seq_len": 256, "learning_rate": 3e-4, "seed": seed}
    model = {"model_name": None, "architecture_type": "custom-transformer", "num_parameters": 3_200_000}
    lines = [line(0, "run_start", 0, config=config, model=model, process={"host": "bench", "pid": 1})]
    for step in range(1, steps + 1):
        loss = 4.2 / (1 + step / 1000)
        lines.append(
            line(
                step * 0.5,
                "step",
                step,
                loss=loss,
                lr=3e-4,
                tokens_per_s=8192.0,
                grad_norm=0.9,
                tokens_seen=step * 4096,
                elapsed_s=step * 0.5,
            )
        )
        if step % 100 == 0:
            lines.append(line(step * 0.5, "eval", step, val_loss=loss * 1.05, eval_seconds=0.4))
    lines.append(line(steps * 0.5, "run_end", steps, status="completed", final_loss=loss, final_val_loss=loss))
    text = "".join(lines)
    (run_dir / "events.jsonl").write_text(text)
    return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        size = sum(
            write_run(cwd / "outputs" / "2026-11-25" / f"{n:02d}-00-00", args.steps, n) for n in range(args.runs)
        )
        commands = {
            "python main.py runs list": [sys.executable, str(MAIN), "runs", "list"],
            "python main.py runs list --json": [sys.executable, str(MAIN), "runs", "list", "--json"],
            "python main.py --help": [sys.executable, str(MAIN), "--help"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
        }
        print(
            f"{args.runs} runs of {args.steps:,} steps ({size / 1e6:.0f} MB of events.jsonl); median of {args.repeats} fresh processes each:"
        )
        for label, command in commands.items():
            print(f"  {label:<36} {median_seconds(command, cwd, args.repeats):6.3f} s")


if __name__ == "__main__":
    main()

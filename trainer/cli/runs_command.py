"""The ``runs`` subcommand: list, show, plot and compare runs, read from their run directories.

    runs list [DIR ...] [--json]          the runs under outputs/ and multirun/ (or DIR)
    runs show RUN [--json]                one run: summary, config, lineage, checkpoints, trackers
    runs plot RUN [RUN ...] --out FILE.png [--x step|tokens|time]
    runs compare RUN RUN                  the config keys that differ, and the losses

Nothing here imports torch (``runs list`` answers at once, bench/runs_cli.py measures it);
matplotlib is imported by ``runs plot`` alone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.tables import short_count, table
from trainer.errors import UsageError
from trainer.run.durations import clock
from trainer.run.history import EVENTS_FILE, X_AXES
from trainer.run.listing import RUN_ROOTS, RunSummary, find_runs, run_details, summarize_run

COMMAND = "runs"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=f"{program_name()} {COMMAND}", description="Past and present runs, read from their events.jsonl."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("list", help="a table of the runs under outputs/ and multirun/")
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR", help="where to look instead (searched below)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p = sub.add_parser("show", help="one run: summary, config, lineage, checkpoints, trackers")
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p = sub.add_parser("plot", help="overlay the loss curves of runs in one picture")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="where to write the picture")
    p.add_argument("--x", choices=X_AXES, default="step", help="the x axis: step, tokens seen or training time")
    p = sub.add_parser("compare", help="the config keys that differ between two runs, and their losses")
    p.add_argument("runs", nargs=2, type=Path, metavar="RUN")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"list": list_runs, "show": show_run, "plot": plot_runs, "compare": compare_runs}[args.action](args)


def list_runs(args: argparse.Namespace) -> int:
    roots = args.dirs or [Path(root) for root in RUN_ROOTS if Path(root).is_dir()]
    for root in args.dirs:
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory", hint="give a directory that holds run directories")
    runs = sorted((summarize_run(d) for d in find_runs(roots)), key=lambda run: (run.started or "", run.run_dir))
    if args.json:
        print(json.dumps([asdict(run) for run in runs], indent=2))
        return 0
    if not runs:
        where = " or ".join(f"{r}/" for r in (args.dirs or RUN_ROOTS))
        print(f"no runs under {where} in {Path.cwd()}; start one with: {program_name()} training=fast")
        return 0
    header = ("run directory", "started", "status", "model", "steps", "loss", "val_loss", "wall", "tok/s")
    print(table([header, *(_row(run) for run in runs)]))
    return 0


def _row(run: RunSummary) -> tuple[str, ...]:
    planned = f"/{run.max_steps}" if run.max_steps is not None else ""
    model = f"{run.model or '-'} {short_count(run.parameters)}" if run.parameters else run.model or "-"
    return (
        run.run_dir,
        _local_time(run.started),
        run.status,
        model,
        f"{run.steps}{planned}",
        _fmt(run.loss, ".4f"),
        _fmt(run.val_loss, ".4f"),
        _clock(run.wall_time_s),
        _fmt(run.tokens_per_s, ",.0f"),
    )


def show_run(args: argparse.Namespace) -> int:
    details = run_details(_run_dir(args.run))
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    steps = f"{details['steps']} of {details['max_steps']}" if details["max_steps"] else str(details["steps"])
    lineage = details["lineage"] or {}
    lines = [
        ("run directory", details["run_dir"]),
        ("run id", details["run_id"]),
        ("status", details["status"]),
        ("started", _local_time(details["started"])),
        ("steps", steps),
        ("loss", f"{_fmt(details['loss'], '.4f')} (val {_fmt(details['val_loss'], '.4f')})"),
        ("wall time", _clock(details["wall_time_s"])),
        ("tokens/s", _fmt(details["tokens_per_s"], ",.0f")),
        ("model", f"{details['model'] or '-'} ({short_count(details['parameters'])} parameters)"),
        ("lineage", " -> ".join(lineage.get("chain") or []) or lineage.get("origin") or "-"),
        ("fine-tune", details["fine_tune"] or "-"),
        ("data", (details["data"] or {}).get("source", "-")),
        ("checkpoints", "\n".join(details["checkpoints"]) or "-"),
        ("watched by", ", ".join(details["files"]) or "events.jsonl only"),
        *((f"{name} run", info.get("run_id", "-")) for name, info in details["trackers"].items()),
        ("config", "\n".join(f"{k}: {_text(v)}" for k, v in (details["config"] or {}).items())),
    ]
    for label, text in lines:
        first, *rest = str(text).splitlines() or [""]
        print(f"{label:>14}: {first}")
        for line in rest:
            print(f"{'':>16}{line}")
    return 0


def plot_runs(args: argparse.Namespace) -> int:
    from trainer.run.history import load_history
    from trainer.run.plots import draw_overlay

    runs = [(str(run), load_history(_run_dir(run))) for run in args.runs]
    if args.out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out} must name a .png file", hint="e.g. --out runs.png")
    print(f"wrote {draw_overlay(runs, args.out, x=args.x)}")
    return 0


def compare_runs(args: argparse.Namespace) -> int:
    first, second = (run_details(_run_dir(run)) for run in args.runs)
    a, b = first["config"] or {}, second["config"] or {}
    differ = [
        (key, _text(a.get(key)), _text(b.get(key))) for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)
    ]
    names = (str(args.runs[0]), str(args.runs[1]))
    print("config keys that differ:" if differ else "configs: the same")
    if differ:
        print(table([("key", *names), *differ]))
    print()
    results = [
        ("status", first["status"], second["status"]),
        ("steps", str(first["steps"]), str(second["steps"])),
        ("final loss", _fmt(first["loss"], ".4f"), _fmt(second["loss"], ".4f")),
        ("final val_loss", _fmt(first["val_loss"], ".4f"), _fmt(second["val_loss"], ".4f")),
        ("wall time", _clock(first["wall_time_s"]), _clock(second["wall_time_s"])),
        ("tokens/s", _fmt(first["tokens_per_s"], ",.0f"), _fmt(second["tokens_per_s"], ",.0f")),
    ]
    print(table([("", *names), *results]))
    return 0


def _run_dir(path: Path) -> Path:
    if not (path / EVENTS_FILE).is_file():
        raise UsageError(
            f"{path} is not a run directory (it has no {EVENTS_FILE})",
            hint=f"{program_name()} runs list shows the run directories",
        )
    return path


def _local_time(started: str | None) -> str:
    from datetime import datetime

    if not started:
        return "-"
    try:
        return datetime.fromisoformat(started).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return started


def _clock(seconds: float | None) -> str:
    return "-" if seconds is None else clock(seconds)


def _text(value: Any) -> str:
    """A config value as YAML writes it (null, true, [csv]); text as it is."""
    return value if isinstance(value, str) else json.dumps(value)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)

"""The one error formatter: every failure becomes one line on stderr and its exit code."""

from __future__ import annotations

import os
import sys
import traceback

from trainer.cli.help import program_name
from trainer.errors import ExitCode, LmrunnerError, StopSignal


def report_error(err: BaseException) -> int:
    """Print ``err`` as one line (with the traceback under LMRUNNER_DEBUG=1); return its exit code."""
    if os.environ.get("LMRUNNER_DEBUG") == "1":
        traceback.print_exc()
    if isinstance(err, StopSignal):
        _say(
            f"interrupted by {err.signal_name} outside training; nothing to save (the last checkpoint, if any, is intact)"
        )
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        _say("interrupted; stopped at once without saving (the last checkpoint, if any, is intact)")
        return ExitCode.SIGINT
    if isinstance(err, LmrunnerError):
        rank = os.environ.get("RANK", "0")
        who = "" if rank == "0" else f"(rank {rank}) "  # under DDP every rank reports
        _say(f"{who}{err.line()}")
        return err.exit_code
    _say(f"{type(err).__name__}: {err} (set LMRUNNER_DEBUG=1 for the traceback)")
    return ExitCode.RUNTIME


def _say(text: str) -> None:
    # Hints name commands as a checkout runs them; an installed lmrunner reads its own name.
    prog = program_name()
    if prog != "python main.py":
        text = text.replace("python main.py", prog)
    print(f"error: {text}", file=sys.stderr)

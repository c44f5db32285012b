"""lmrunner's command line: route argv to a front door or a subcommand, and exit with its code.

    lmrunner [model=...] [training=...] [key=value ...] [-m]    the Hydra front door (hydra_app.py)
    lmrunner --config FILE [--max-steps N] [--data FILE] ...     the plain front door (plain.py)
    lmrunner import-model | list-models | ...                    the registry (registry_commands.py)

``python main.py`` in a source checkout is the same command. The CLI layer is the only one
that reads argv, prints for the user or picks the exit code; everything below it raises typed
errors (trainer/errors.py), which errors.py here turns into one line each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from trainer.cli.console import init_distributed, setup_console_logging
from trainer.cli.errors import report_error
from trainer.cli.plain import PLAIN_FLAGS, run_plain
from trainer.cli.registry_commands import SUBCOMMANDS
from trainer.errors import ExitCode


def route(argv: list[str]) -> int:
    """--help: the overview; a registry subcommand; any plain-door flag: the --config door;
    else the Hydra app (Hydra's own parser rejects --config as an ambiguous abbreviation, so
    it never sees it)."""
    if argv in (["-h"], ["--help"]):
        from trainer.cli.help import overview
        from trainer.cli.hydra_app import group_options
        from trainer.cli.shipped import example_configs

        print(overview(group_options("model"), group_options("training"), example_configs()))
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        from trainer.cli.registry_commands import main as registry_main

        return registry_main(argv)
    if any(arg.split("=", 1)[0] in PLAIN_FLAGS for arg in argv):
        return run_plain(argv)
    from trainer.cli.hydra_app import run_hydra

    init_distributed()
    return run_hydra(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    setup_console_logging()
    try:
        with _stdout_watched():
            code = route(argv)
            sys.stdout.flush()  # a reader gone shows here, not at interpreter exit where it cannot be caught
        return code
    except StdoutClosed:
        return _stop_quietly()
    except (KeyboardInterrupt, Exception) as err:  # formatted once, here: one line, its exit code
        return report_error(err)
    finally:
        if "torch.distributed" in sys.modules:
            from trainer.training.distributed import shutdown

            shutdown()


class StdoutClosed(BaseException):
    """Whoever read stdout has gone (``lmrunner list-models --json | head -1``). A BaseException,
    so it passes every ``except Exception`` on its way up to main(), Hydra's own included
    (Hydra prints --cfg and --info itself and would report the broken pipe with a traceback)."""


@contextmanager
def _broken_pipe_as_stdout_closed() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError as err:
        raise StdoutClosed from err


class _WatchedStdout:
    """sys.stdout for the time of a command; a broken pipe on it raises StdoutClosed."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        with _broken_pipe_as_stdout_closed():
            return self._stream.write(text)

    def flush(self) -> None:
        with _broken_pipe_as_stdout_closed():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ... as the stream has them
        return getattr(self._stream, name)


@contextmanager
def _stdout_watched() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _WatchedStdout(original)
    try:
        yield
    finally:
        sys.stdout = original


def _stop_quietly() -> int:
    """As Python's docs advise for a broken pipe: point stdout at /dev/null, so that the flush
    at interpreter exit does not fail on it again, and exit as a process killed by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.SIGPIPE

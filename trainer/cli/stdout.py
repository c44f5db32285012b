"""A closed stdout (``lmrunner list-models --json | head -1``) ends a command quietly, as Unix tools do."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from trainer.errors import ExitCode


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
def stdout_watched() -> Iterator[None]:
    original = sys.stdout
    sys.stdout = _WatchedStdout(original)
    try:
        yield
    finally:
        sys.stdout = original


def stop_quietly() -> int:
    """As Python's docs advise for a broken pipe: point stdout at /dev/null, so that the flush
    at interpreter exit does not fail on it again, and exit as a process killed by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.SIGPIPE

"""Signals outside training: Ctrl-C, SIGTERM, SIGUSR1 and SIGUSR2 stop a command with one line.

During training the Trainer takes these signals over and saves a checkpoint before it stops
(trainer/training/loop.py). Before and after, there is nothing to save: SIGINT raises
KeyboardInterrupt as Python does, and the others (what schedulers send before a kill or
requeue) raise StopSignal, so the CLI reports either as one line and exit 130 or 143 instead
of dying by the signal with exit 138/140 and no word said.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from trainer.errors import StopSignal

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


def stop_on_signals() -> dict[int, object]:
    """Install the handlers; return the ones they replace (for ``restore_signals``)."""

    def stop(signum, frame):
        raise StopSignal(signal.Signals(signum).name)

    return _install(STOP_SIGNALS, stop)


def restore_signals(previous: dict[int, object]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold signals back while importing torch: an exception raised in the middle of the
    import of its C extensions (and numpy's) leaves them half-loaded, and what surfaces is an
    ImportError or a RecursionError instead of the interruption. A signal that arrives in
    the meantime is raised as soon as the block ends."""
    received: list[str] = []
    previous = _install(("SIGINT", *STOP_SIGNALS), lambda signum, frame: received.append(signal.Signals(signum).name))
    try:
        yield
    finally:
        restore_signals(previous)
    if received:
        raise KeyboardInterrupt if received[0] == "SIGINT" else StopSignal(received[0])


def _install(names: tuple[str, ...], handler) -> dict[int, object]:
    try:
        return {getattr(signal, name): signal.signal(getattr(signal, name), handler) for name in names}
    except ValueError:  # not the main thread: signals keep their handlers
        return {}


def import_torch() -> None:
    """Import torch with signals held back (see ``signals_deferred``): each front door calls
    this once its command line is known to be good, before the work that needs torch."""
    with signals_deferred():
        import torch  # noqa: F401

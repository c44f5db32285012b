"""Signals outside training: held back while torch is imported, then raised once."""

import os
import signal

import pytest

from trainer.cli.signals import restore_signals, signals_deferred, stop_on_signals
from trainer.errors import StopSignal


@pytest.mark.parametrize(
    "name, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", StopSignal), ("SIGUSR1", StopSignal)]
)
def test_a_signal_inside_the_block_is_raised_when_it_ends(name, raised):
    finished = []
    with pytest.raises(raised), signals_deferred():
        os.kill(os.getpid(), getattr(signal, name))
        finished.append("the block ran to its end")  # the import is never cut in half
    assert finished == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_no_signal_no_exception_and_the_first_one_wins():
    with signals_deferred():
        pass
    with pytest.raises(StopSignal, match="SIGUSR2"), signals_deferred():
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGINT)


def test_stop_signals_outside_the_block_raise_stop_signal_at_once():
    previous = stop_on_signals()
    try:
        with pytest.raises(StopSignal, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        restore_signals(previous)

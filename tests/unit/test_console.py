"""The console during training: smoothed figures, an ETA, samples as text."""

import logging
from types import SimpleNamespace

from trainer.run.console import ConsoleHook, SmoothedRate
from trainer.run.durations import clock


def test_one_slow_step_moves_the_smoothed_rate_a_little():
    rate = SmoothedRate(smoothing=0.1)
    for second, tokens_per_s in enumerate([10_000, 10_000, 50_000, 10_000]):
        rate.update(tokens_per_s, now=float(second))
    assert 13_000 < rate.tokens_per_s < 15_000  # not 50,000, not 10,000
    assert rate.eta_seconds(steps_left=120) == 120.0  # one step a second


def test_clock():
    assert (clock(None), clock(59.6), clock(3723)) == ("?", "0:01:00", "1:02:03")


def test_progress_lines_carry_the_smoothed_rate_and_an_eta_and_samples_print_as_text(caplog):
    hook = ConsoleHook(max_steps=20, start_step=0)  # stderr is not a terminal under pytest
    trainer = SimpleNamespace(config=SimpleNamespace(max_steps=20))
    with caplog.at_level(logging.INFO, logger="lmrunner"):
        for step in range(1, 3):
            record = {
                "event": "step",
                "step": step,
                "loss": 2.5,
                "lr": 1e-3,
                "tokens_per_s": 4000.0,
                "grad_norm": 0.8125,
            }
            hook.on_event(trainer, record)
        hook.on_event(trainer, {"event": "sample", "step": 2, "text": "The first line\nthe 'second'"})
    hook.close()
    lines = [record.getMessage() for record in caplog.records]
    assert (
        lines[0]
        == "step 2/20  loss 2.5000  lr 1.00e-03  grad norm 0.812  4,000 tok/s  ETA " + lines[0].rsplit(" ", 1)[1]
    )
    assert lines[1] == "step 2: sample\n    The first line\n    the 'second'"

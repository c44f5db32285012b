"""The console during training: a progress bar on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainer.run.durations import clock
from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer

log = logging.getLogger("lmrunner")


class SmoothedRate:
    """Exponential moving averages of tokens/s and of wall seconds per step: one slow step
    (an evaluation, a checkpoint, the first step's warm-up) moves the figures a little, not
    tenfold, and the wall time gives an ETA that counts what the loop does besides steps."""

    def __init__(self, smoothing: float = 0.1):
        self.smoothing = smoothing
        self.tokens_per_s: float | None = None
        self.seconds_per_step: float | None = None
        self._last_step_at: float | None = None

    def update(self, tokens_per_s: float, now: float) -> None:
        self.tokens_per_s = self._blend(self.tokens_per_s, tokens_per_s)
        if self._last_step_at is not None:
            self.seconds_per_step = self._blend(self.seconds_per_step, now - self._last_step_at)
        self._last_step_at = now

    def eta_seconds(self, steps_left: int) -> float | None:
        return None if self.seconds_per_step is None else steps_left * self.seconds_per_step

    def _blend(self, average: float | None, value: float) -> float:
        return value if average is None else average + self.smoothing * (value - average)


class ConsoleHook(Hook):
    """A progress bar (step, loss, grad norm, smoothed tokens/s, ETA) on a terminal; plain progress lines
    with the same figures otherwise. Eval, sample and checkpoint events become short log lines
    either way; a sample prints as the text it is, indented under its step."""

    name = "console"

    def __init__(self, max_steps: int, start_step: int):
        self.interactive = sys.stderr.isatty()
        self.line_every = max(1, min(100, (max_steps - start_step) // 10))
        self.rate = SmoothedRate()
        self.bar = tqdm(
            total=max_steps,
            initial=start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not self.interactive,
            file=sys.stderr,
        )

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        event, step = record["event"], record["step"]
        if event == "step":
            self._step(record, step, trainer.config.max_steps)
        elif event == "eval":
            self._line(f"step {step}: val_loss {record['val_loss']:.4f}")
        elif event == "sample":
            text = "\n".join(f"    {line}" for line in record["text"].splitlines() or [""])
            self._line(f"step {step}: sample\n{text}")
        elif event == "checkpoint":
            self._line(f"step {step}: checkpoint {record['path']}")

    def _step(self, record: dict[str, Any], step: int, max_steps: int) -> None:
        self.rate.update(record["tokens_per_s"], time.monotonic())
        tokens_per_s = f"{self.rate.tokens_per_s:,.0f}"
        self.bar.update(step - self.bar.n)
        grad_norm = f"{record['grad_norm']:.3g}"
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", gnorm=grad_norm, tok_s=tokens_per_s, refresh=False)
        if not self.interactive and (step % self.line_every == 0 or step == max_steps):
            eta = clock(self.rate.eta_seconds(max_steps - step))
            log.info(
                "step %d/%d  loss %.4f  lr %.2e  grad norm %s  %s tok/s  ETA %s",
                step,
                max_steps,
                record["loss"],
                record["lr"],
                grad_norm,
                tokens_per_s,
                eta,
            )

    def _line(self, text: str) -> None:
        # The console handler writes through tqdm, so the bar is redrawn below the line.
        log.info(text)

    def close(self) -> None:
        self.bar.close()


def tokenizing_progress(shown: bool):
    """A progress bar for tokenizing data (bytes of text, or examples), on a terminal only;
    the data layer reports to it and says the outcome in one line either way."""
    if not (shown and sys.stderr.isatty()):
        return None
    bars: dict[str, tqdm] = {}

    def update(what: str, done: int, total: int) -> None:
        bar = bars.get(what)
        if bar is None:
            bar = bars[what] = tqdm(total=total, desc=what, unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del bars[what]

    return update

"""The console during training: a progress bar on a terminal, plain progress lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainer.training.hooks import Hook

if TYPE_CHECKING:
    from trainer.training.loop import Trainer

log = logging.getLogger("lmrunner")


class ConsoleHook(Hook):
    """A progress bar (step, loss, tokens/s, ETA) on a terminal; plain progress lines otherwise.

    Eval, sample and checkpoint events become short log lines either way.
    """

    name = "console"

    def __init__(self, max_steps: int, start_step: int):
        self.interactive = sys.stderr.isatty()
        self.line_every = max(1, min(100, (max_steps - start_step) // 10))
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
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
            if not self.interactive and (step % self.line_every == 0 or step == trainer.config.max_steps):
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e  %s tok/s",
                    step,
                    trainer.config.max_steps,
                    record["loss"],
                    record["lr"],
                    f"{record['tokens_per_s']:,.0f}",
                )
        elif event == "eval":
            self._line(f"step {step}: val_loss {record['val_loss']:.4f}")
        elif event == "sample":
            self._line(f"step {step}: sample {record['text']!r}")
        elif event == "checkpoint":
            self._line(f"step {step}: checkpoint {record['path']}")

    def _line(self, text: str) -> None:
        # The console handler writes through tqdm, so the bar is redrawn below the line.
        log.info(text)

    def close(self) -> None:
        self.bar.close()

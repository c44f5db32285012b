"""Hooks: what happens around each training step. The active list is logged at run start.

Every hook sees every event the trainer reports (``on_event``) and may act after each step
(``on_step_end``) and once at the end (``on_run_end``, only when training finished).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from trainer.run.events import EventLog

if TYPE_CHECKING:
    from trainer.training.loop import Trainer

log = logging.getLogger("lmrunner")


class Hook:
    name = "hook"

    def describe(self) -> str:
        return self.name

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass

    def on_step_end(self, trainer: Trainer) -> None:
        pass

    def on_run_end(self, trainer: Trainer) -> None:
        pass

    def close(self) -> None:
        pass


def _due(step: int, cadence: int | None) -> bool:
    return cadence is not None and step % cadence == 0


class EventLogHook(Hook):
    """Writes every reported event to events.jsonl."""

    name = "event_log"

    def __init__(self, events: EventLog):
        self.events = events

    def on_event(self, trainer: Trainer, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k not in ("event", "step")}
        self.events.emit(record["event"], record["step"], **fields)


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


class CadenceHook(Hook):
    """Acts every ``cadence`` steps, and once more at the end unless it just did."""

    def __init__(self, cadence: int):
        self.cadence = cadence
        self.last_step = -1

    def describe(self) -> str:
        return f"{self.name}(every {self.cadence} steps)"

    def on_step_end(self, trainer: Trainer) -> None:
        if _due(trainer.step, self.cadence):
            self._act(trainer)

    def on_run_end(self, trainer: Trainer) -> None:
        if self.last_step != trainer.step:
            self._act(trainer)

    def _act(self, trainer: Trainer) -> None:
        self.last_step = trainer.step
        self.act(trainer)

    def act(self, trainer: Trainer) -> None:
        raise NotImplementedError


class EvalHook(CadenceHook):
    name = "eval"

    def act(self, trainer: Trainer) -> None:
        started = time.perf_counter()
        val_loss = trainer.evaluate()
        trainer.report("eval", val_loss=val_loss, eval_seconds=round(time.perf_counter() - started, 3))


class SamplingHook(CadenceHook):
    name = "sampling"

    def act(self, trainer: Trainer) -> None:
        cfg = trainer.config
        trainer.report(
            "sample",
            text=trainer.sample(),
            prompt=cfg.sampling_prompt,
            temperature=cfg.sampling_temperature,
            sampling_seed=cfg.sampling_seed,
        )


class CheckpointHook(Hook):
    """Saves every ``cadence`` steps (None: only the final one) and always at the end."""

    name = "checkpoint"

    def __init__(self, cadence: int | None):
        self.cadence = cadence

    def describe(self) -> str:
        every = f"every {self.cadence} steps" if self.cadence else "periodic off"
        return f"checkpoint({every}, final always)"

    def on_step_end(self, trainer: Trainer) -> None:
        if _due(trainer.step, self.cadence):
            trainer.save_checkpoint()

    def on_run_end(self, trainer: Trainer) -> None:
        if trainer.last_checkpoint_step != trainer.step:
            trainer.save_checkpoint()


def default_hooks(trainer_config, events: EventLog | None, start_step: int, console: bool = True) -> list[Hook]:
    """The standard hook list for a run; eval and sampling only when their cadence is set.

    ``events`` None: a DDP rank other than 0, which keeps only the hooks every rank must run
    together (evaluation and checkpoints are collective) and reports to no one.
    """
    hooks: list[Hook] = []
    if console:
        hooks.append(ConsoleHook(trainer_config.max_steps, start_step))
    if events is not None:
        hooks.append(EventLogHook(events))
    if trainer_config.eval_cadence:
        hooks.append(EvalHook(trainer_config.eval_cadence))
    if trainer_config.sampling_cadence and events is not None:
        hooks.append(SamplingHook(trainer_config.sampling_cadence))
    hooks.append(CheckpointHook(trainer_config.checkpoint_cadence))
    return hooks

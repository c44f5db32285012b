"""Hooks: what happens around each training step. The active list is logged at run start.

Every hook sees every event the trainer reports (``on_event``) and may act after each step
(``on_step_end``) and once at the end (``on_run_end``, only when training finished). The hooks
here act on the training itself (evaluation, sampling, checkpoints); those that report it
(the console, events.jsonl) are the run layer's, in trainer/run/.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.training.loop import Trainer


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


def due(step: int, cadence: int | None) -> bool:
    return cadence is not None and step % cadence == 0


class CadenceHook(Hook):
    """Acts every ``cadence`` steps (None: never on the way), and once more at the end unless it just did."""

    def __init__(self, cadence: int | None):
        self.cadence = cadence
        self.last_step = -1

    def describe(self) -> str:
        return f"{self.name}(every {self.cadence} steps)" if self.cadence else f"{self.name}(at the end)"

    def on_step_end(self, trainer: Trainer) -> None:
        if due(trainer.step, self.cadence):
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
        prompt = cfg.sampling_prompt
        if self.cadence is None and not _writable(trainer.tokenizer, prompt):
            # sampling_prompt is checked when sampling is asked for. The sample every run ends
            # with was not asked for, and must not fail a run: it starts from nothing instead.
            prompt = ""
        trainer.report(
            "sample",
            text=trainer.sample(prompt=prompt),
            prompt=prompt,
            temperature=cfg.sampling_temperature,
            sampling_seed=cfg.sampling_seed,
        )


def _writable(tokenizer, text: str) -> bool:
    """Whether the vocabulary can write ``text`` (a character vocabulary may lack some characters)."""
    try:
        tokenizer.encode(text)
    except KeyError:
        return False
    return True


class CheckpointHook(Hook):
    """Saves every ``cadence`` steps (None: only the final one) and always at the end."""

    name = "checkpoint"

    def __init__(self, cadence: int | None):
        self.cadence = cadence

    def describe(self) -> str:
        every = f"every {self.cadence} steps" if self.cadence else "periodic off"
        return f"checkpoint({every}, final always)"

    def on_step_end(self, trainer: Trainer) -> None:
        if due(trainer.step, self.cadence):
            trainer.save_checkpoint()

    def on_run_end(self, trainer: Trainer) -> None:
        if trainer.last_checkpoint_step != trainer.step:
            trainer.save_checkpoint()

"""Weights & Biases: offline unless ``WANDB_MODE`` says otherwise, so it needs no account and
never asks for a login; ``wandb sync outputs/DATE/TIME/wandb/offline-run-*`` uploads later.

The W&B run id is lmrunner's run id, so a continued run resumes the same W&B run. The project
is ``WANDB_PROJECT``, else "lmrunner"; files go to the run directory's wandb/.
"""

from __future__ import annotations

import os

from trainer.run.loggers.base import TrackedRun, TrackerHook

DEFAULT_PROJECT = "lmrunner"
WANDB_DIR = "wandb"  # wandb.init(dir=D) writes into D/wandb
_EXIT_CODES = {"completed": 0, "interrupted": 130}


class WandbLogger(TrackerHook):
    name = "wandb"
    package = "wandb"
    extra = "wandb"

    def start(self, run: TrackedRun) -> None:
        import wandb

        self.samples: list[list] = []
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            id=run.run_id,
            name=run.name,
            resume="allow",
            dir=str(run.run_dir),  # its files go to run_dir / WANDB_DIR
            mode=os.environ.get("WANDB_MODE") or "offline",
            config={**run.config, "lmrunner": run.tags},
            reinit="create_new",  # each run its own object: a sweep runs several in one process
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_text(self, step: int, text: str) -> None:
        import wandb

        # A table of every sample so far: W&B shows the latest logged version of it.
        self.samples.append([step, text])
        self.run.log({"samples": wandb.Table(columns=["step", "text"], data=self.samples)}, step=step)

    def end(self, status: str) -> None:
        import wandb

        self.run.finish(exit_code=_EXIT_CODES.get(status, 1))
        # finish() returns before W&B's service process has written the run's files; teardown
        # waits for it, so they are whole when the run says it is done. (The next run in this
        # process, a sweep's, starts the service again: half a second.)
        wandb.teardown()

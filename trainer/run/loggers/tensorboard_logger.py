"""TensorBoard: event files in the run directory's tensorboard/ (``tensorboard --logdir outputs``).

A continued run writes into the same directory with ``purge_step`` at the step after its
checkpoint, so TensorBoard drops what a killed process logged for the steps the run repeats:
each step is shown once.
"""

from __future__ import annotations

from trainer.run.loggers.base import TrackedRun, TrackerHook, flat_params

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger(TrackerHook):
    name = "tensorboard"
    package = "tensorboard"
    extra = "tensorboard"

    def start(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        purge = None if run.resumed_from is None else run.resumed_from + 1
        self.writer = SummaryWriter(log_dir=str(run.run_dir / TENSORBOARD_DIR), purge_step=purge)
        if run.resumed_from is None:
            # The config in TensorBoard's HPARAMS tab, in this run's own directory (add_hparams
            # would make a directory of its own), beside the metadata as text.
            for summary in hparams(flat_params(run.config), {"train/loss": 0, "val/loss": 0}):
                self.writer.file_writer.add_summary(summary)
            tags = "\n".join(f"- **{key}**: {value}" for key, value in run.tags.items())
            self.writer.add_text("run", tags, 0)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_text(self, step: int, text: str) -> None:
        # Indented four spaces: TensorBoard renders text as Markdown, and a sample is not.
        self.writer.add_text("sample", "\n".join(f"    {line}" for line in text.splitlines()), step)

    def flush(self) -> None:
        self.writer.flush()

    def end(self, status: str) -> None:
        self.writer.close()

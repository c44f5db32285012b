"""Finding checkpoints in a run: list, the latest that verifies, what --resume PATH means, pruning."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainer.checkpoint.layout import MANIFEST, STEP_DIR_PATTERN
from trainer.checkpoint.verify import verify_checkpoint
from trainer.errors import CheckpointError


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete-looking step-* directories, oldest first (partial ones are hidden names)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and STEP_DIR_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest_valid_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that verifies completely (a damaged newer one is passed over)."""
    for candidate in reversed(list_checkpoints(checkpoints_dir)):
        try:
            verify_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def resolve_resume_path(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's latest valid checkpoint."""
    if (path / MANIFEST).exists() or STEP_DIR_PATTERN.match(path.name):
        return path
    if path.is_dir() and (path / "checkpoints").is_dir():
        latest = latest_valid_checkpoint(path / "checkpoints")
        if latest is None:
            raise CheckpointError("run directory has no complete checkpoint", str(path))
        return latest
    if path.is_dir() and list_checkpoints(path):
        latest = latest_valid_checkpoint(path)
        if latest is None:
            raise CheckpointError("no complete checkpoint in this directory", str(path))
        return latest
    if not path.exists():
        raise CheckpointError("checkpoint not found", str(path), hint="give a checkpoint directory or a run directory")
    raise CheckpointError(
        "is neither a checkpoint nor a run directory with checkpoints",
        str(path),
        hint="give a run directory (outputs/<date>/<time>) or one of its checkpoints/step-* directories",
    )


def prune_checkpoints(checkpoints_dir: Path, keep_last: int | None, newest_step: int) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints up to ``newest_step`` (the one just written),
    delete the older ones, and return what was deleted. Directories of later steps (left by
    a run this one branched from, or damaged) are not this run's to judge: they stay."""
    if keep_last is None:
        return []
    ours = [p for p in list_checkpoints(checkpoints_dir) if int(STEP_DIR_PATTERN.match(p.name).group(1)) <= newest_step]
    doomed = ours[:-keep_last]
    for path in doomed:
        if path.is_symlink():  # never follow a link out of the run directory
            path.unlink()
        else:
            shutil.rmtree(path)
    return doomed

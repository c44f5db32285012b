"""Writing a checkpoint atomically: a hidden partial directory, fsynced, manifest last, renamed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from trainer.checkpoint.layout import FORMAT_VERSION, MANIFEST, TRAINER_STATE, step_dir_name
from trainer.files import describe_files, fsync_dir, fsync_file

# A writer fills the given directory with its files.
FileWriter = Callable[[Path], None]


def write_checkpoint(checkpoints_dir: Path, step: int, writers: list[FileWriter], trainer_state: dict) -> Path:
    """Write a complete checkpoint for ``step`` atomically and return its directory."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / step_dir_name(step)
    partial = checkpoints_dir / f".partial-{step_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for write in writers:
        write(partial)
    state = {"format_version": FORMAT_VERSION, "step": step, **trainer_state}
    (partial / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    described = describe_files(partial)
    files = sorted(described)
    manifest = {"format_version": FORMAT_VERSION, "step": step, "files": described}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    for name in [*files, MANIFEST]:
        fsync_file(partial / name)
    fsync_dir(partial)
    if final.exists():  # the same step saved again (e.g. a resumed run): replace it whole
        stale = checkpoints_dir / f".stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(partial, final)
    fsync_dir(checkpoints_dir)
    return final

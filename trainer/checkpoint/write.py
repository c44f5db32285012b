"""Writing a checkpoint atomically: a hidden partial directory, fsynced, manifest last, renamed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from trainer.checkpoint.find import remove_stale_leftovers, step_of
from trainer.checkpoint.layout import (
    MANIFEST,
    TRAINER_STATE,
    hidden_dir_name,
    partial_dir_name,
    step_dir_name,
)
from trainer.checkpoint.verify import verify_checkpoint
from trainer.errors import CheckpointError, DiskWriteError
from trainer.files import describe_files, fsync_dir, fsync_file, os_error_cause

# A writer fills the given directory with its files.
FileWriter = Callable[[Path], None]


def write_checkpoint(checkpoints_dir: Path, step: int, writers: list[FileWriter], trainer_state: dict) -> Path:
    """Write a complete checkpoint for ``step`` atomically and return its directory.

    If writing fails, only the partial directory is removed (earlier checkpoints are never
    touched), and a failure of the disk (full, quota, permissions) becomes a DiskWriteError
    naming its cause and the directory.
    """
    partial = begin_checkpoint(checkpoints_dir, step)
    return finish_checkpoint(partial, step, writers, trainer_state)


def begin_checkpoint(checkpoints_dir: Path, step: int) -> Path:
    """The empty hidden directory ``step`` is assembled in (a killed writer's leftovers removed
    first). Writers that are not this process (the other ranks of an FSDP run) fill it too,
    inside ``removed_on_failure``; ``finish_checkpoint`` completes it."""
    final = checkpoints_dir / step_dir_name(step)
    _refuse_damaged_in_the_way(final)
    partial = checkpoints_dir / partial_dir_name(step, os.getpid())
    with removed_on_failure(partial, step):
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_leftovers(checkpoints_dir)  # a killed writer's gigabytes, before adding ours
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    return partial


def finish_checkpoint(
    partial: Path, step: int, writers: list[FileWriter], trainer_state: dict, format_version: int = 1
) -> Path:
    """Run ``writers`` in ``partial``, then trainer_state.json and the manifest (last), fsync,
    and rename it to its step directory, which is returned."""
    final = partial.parent / step_dir_name(step)
    with removed_on_failure(partial, step):
        _assemble(partial, step, writers, trainer_state, format_version)
        _publish(partial, final)
    return final


@contextlib.contextmanager
def removed_on_failure(partial: Path, step: int):
    """Whatever fails inside (a second Ctrl-C too) removes ``partial``, never anything else; a
    failure of the disk becomes a DiskWriteError naming its cause and the directory."""
    try:
        yield
    except BaseException as err:
        cause = os_error_cause(err)  # read first: cleaning up may fail as well, and must not hide it
        shutil.rmtree(partial, ignore_errors=True)
        if cause is None or not isinstance(err, Exception):  # not the disk, or Ctrl-C: as it was
            raise
        checkpoints_dir = partial.parent
        raise DiskWriteError(
            f"writing checkpoint {step_dir_name(step)}",
            str(checkpoints_dir),
            cause,
            hint="the partial checkpoint was removed and earlier ones are intact; free space there, then "
            f"continue with: python main.py --resume {checkpoints_dir.parent}",
        ) from err


def _assemble(partial: Path, step: int, writers: list[FileWriter], trainer_state: dict, format_version: int) -> None:
    for write in writers:
        write(partial)
    state = {"format_version": format_version, "step": step, **trainer_state}
    (partial / TRAINER_STATE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    described = describe_files(partial)
    manifest = {"format_version": format_version, "step": step, "files": described}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    for name in [*sorted(described), MANIFEST]:
        fsync_file(partial / name)
    fsync_dir(partial)


def _publish(partial: Path, final: Path) -> None:
    """Rename the finished directory into place; the same step saved again replaces it whole."""
    stale = None
    if final.exists():
        stale = final.with_name(hidden_dir_name("stale", step_of(final), os.getpid()))
        os.replace(final, stale)
    os.replace(partial, final)  # right after: the step is without a directory for one rename only
    fsync_dir(final.parent)
    if stale is not None:
        shutil.rmtree(stale)


def _refuse_damaged_in_the_way(final: Path) -> None:
    """A directory of this step that does not verify is never replaced: it may be all that is
    left of that step (a resume sets such directories aside before training on)."""
    if not (final.exists() or final.is_symlink()):
        return
    try:
        verify_checkpoint(final)
    except CheckpointError as err:
        raise CheckpointError(
            f"a checkpoint of this step is in the way and does not verify ({err.reason}); not replaced",
            str(final),
            hint="move it aside (or delete it), then resume the run",
        ) from err

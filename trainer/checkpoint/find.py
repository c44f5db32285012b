"""Finding checkpoints in a run: list, the latest that verifies, what --resume PATH means, pruning."""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainer.checkpoint.layout import LEFTOVER_PATTERN, MANIFEST, STEP_DIR_PATTERN, hidden_dir_name
from trainer.checkpoint.verify import refuse_link, verify_checkpoint
from trainer.errors import CheckpointError


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The step-* directories (and links so named), oldest first; partial ones have hidden names."""
    if not checkpoints_dir.is_dir():
        return []
    # Links too, even dangling ones, so that resuming can refuse them rather than pass them by.
    found = [p for p in checkpoints_dir.iterdir() if (p.is_dir() or p.is_symlink()) and STEP_DIR_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class Damaged:
    """A checkpoint directory that does not verify, and why (naming the file at fault)."""

    path: Path
    reason: str


def newest_valid(checkpoints_dir: Path) -> tuple[Path | None, list[Damaged]]:
    """The newest checkpoint that verifies completely, and the damaged ones newer than it
    (newest first), which the caller must not pass over in silence."""
    damaged = []
    for candidate in reversed(list_checkpoints(checkpoints_dir)):
        refuse_link(candidate)  # not damage to step over: someone put it there
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            damaged.append(Damaged(candidate, err.reason))
            continue
        return candidate, damaged
    return None, damaged


def latest_valid_checkpoint(checkpoints_dir: Path) -> Path | None:
    return newest_valid(checkpoints_dir)[0]


def set_aside(damaged: Path) -> Path:
    """Rename a damaged checkpoint to a sibling that says so (``step-N.damaged``), which nothing
    lists as a checkpoint or cleans up; return where it went. Never deleted: it may be all
    that is left of that step."""
    for n in itertools.count():
        aside = damaged.with_name(f"{damaged.name}.damaged" + (f"-{n}" if n else ""))
        if not (aside.exists() or aside.is_symlink()):  # os.replace would replace an empty directory
            os.replace(damaged, aside)
            return aside
    raise AssertionError("unreachable")


def resolve_resume_path(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's latest valid checkpoint."""
    if (path / MANIFEST).exists() or STEP_DIR_PATTERN.match(path.name):
        return path
    if path.is_dir() and (path / "checkpoints").is_dir():
        return _newest_valid_or_refuse(path / "checkpoints", path, "run directory has no complete checkpoint")
    if path.is_dir() and list_checkpoints(path):
        return _newest_valid_or_refuse(path, path, "no complete checkpoint in this directory")
    if not path.exists():
        raise CheckpointError("checkpoint not found", str(path), hint="give a checkpoint directory or a run directory")
    raise CheckpointError(
        "is neither a checkpoint nor a run directory with checkpoints",
        str(path),
        hint="give a run directory (outputs/<date>/<time>) or one of its checkpoints/step-* directories",
    )


def _newest_valid_or_refuse(checkpoints_dir: Path, given: Path, message: str) -> Path:
    latest, damaged = newest_valid(checkpoints_dir)
    if latest is None:
        why = f" (the newest, {damaged[0].path.name}: {damaged[0].reason})" if damaged else ""
        raise CheckpointError(message + why, str(given))
    return latest


def prune_checkpoints(checkpoints_dir: Path, keep_last: int | None, newest_step: int) -> list[Path]:
    """Keep the ``keep_last`` newest checkpoints up to ``newest_step`` (the one just written),
    delete the older ones, and return what was deleted. Directories of later steps (left by
    a run this one branched from, or damaged) are not this run's to judge: they stay."""
    if keep_last is None:
        return []
    ours = [p for p in list_checkpoints(checkpoints_dir) if step_of(p) <= newest_step]
    doomed = ours[:-keep_last]
    for path in doomed:
        # Out of sight first (one rename): killed while deleting, it is a hidden leftover that
        # the next write removes, not a half-deleted step-* that looks damaged.
        hidden = path.with_name(hidden_dir_name("pruned", step_of(path), os.getpid()))
        os.replace(path, hidden)
        _remove(hidden)
    return doomed


def remove_stale_leftovers(checkpoints_dir: Path) -> list[Path]:
    """Remove the hidden directories (partial, stale, pruned) of writers that are gone, killed
    mid-write; return them. A process that is still alive keeps its own (the name holds its pid)."""
    if not checkpoints_dir.is_dir():
        return []
    removed = []
    for path in sorted(checkpoints_dir.iterdir()):
        match = LEFTOVER_PATTERN.match(path.name)
        if match and not _is_alive(int(match.group(1))):
            _remove(path)
            removed.append(path)
    return removed


def step_of(path: Path) -> int:
    return int(STEP_DIR_PATTERN.match(path.name).group(1))


def _is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_symlink():  # never follow a link out of the run directory
        path.unlink()
    else:
        shutil.rmtree(path)

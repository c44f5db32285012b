import errno
import io
import json
import os
import subprocess
import sys

import pytest
import torch

import trainer.checkpoint.verify
from trainer.checkpoint.find import (
    latest_valid_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    remove_stale_leftovers,
    resolve_resume_path,
)
from trainer.checkpoint.layout import FORMAT_VERSION
from trainer.checkpoint.tensors import load_tensors, save_tensors
from trainer.checkpoint.verify import verify_checkpoint
from trainer.checkpoint.write import write_checkpoint
from trainer.errors import CheckpointError, DiskWriteError


def write(tmp_path, step, payload=b"weights"):
    def writer(directory):
        (directory / "model.bin").write_bytes(payload)
        save_tensors({"t": torch.arange(3)}, directory / "optimizer.pt")

    return write_checkpoint(tmp_path / "checkpoints", step, [writer], {"run_id": "r", "config": {}})


def test_write_and_verify(tmp_path):
    path = write(tmp_path, 12)
    assert path.name == "step-00000012"
    state = verify_checkpoint(path)
    assert state["step"] == 12 and state["run_id"] == "r" and state["format_version"] == FORMAT_VERSION
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.bin", "optimizer.pt", "trainer_state.json"}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial left
    assert torch.equal(load_tensors(path / "optimizer.pt")["t"], torch.arange(3))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "manifest.json").unlink(), "incomplete"),
        (lambda p: (p / "model.bin").unlink(), "missing"),
        (lambda p: (p / "model.bin").write_bytes(b"weights-but-longer"), "truncated or altered"),
        (lambda p: (p / "model.bin").write_bytes(b"WEIGHTS"), "sha256"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable"),
    ],
)
def test_damaged_checkpoints_are_refused(tmp_path, damage, message):
    path = write(tmp_path, 5)
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(path)


def test_newer_format_is_refused(tmp_path):
    path = write(tmp_path, 5)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="newer"):
        verify_checkpoint(path)


def test_latest_skips_incomplete_and_partial(tmp_path):
    write(tmp_path, 10)
    newest = write(tmp_path, 20)
    (newest / "manifest.json").unlink()  # as if the process died while writing it
    (tmp_path / "checkpoints" / ".partial-step-00000030-99").mkdir()
    assert latest_valid_checkpoint(tmp_path / "checkpoints").name == "step-00000010"


def test_resolve_resume_path(tmp_path):
    first = write(tmp_path, 10)
    second = write(tmp_path, 20)
    assert resolve_resume_path(tmp_path) == second  # a run directory
    assert resolve_resume_path(tmp_path / "checkpoints") == second
    assert resolve_resume_path(first) == first
    with pytest.raises(CheckpointError, match="not found"):
        resolve_resume_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        resolve_resume_path(tmp_path / "empty")
    with pytest.raises(CheckpointError):
        verify_checkpoint(tmp_path / "checkpoints" / "step-00000099")


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3, 4):
        write(tmp_path, step)
    deleted = prune_checkpoints(tmp_path / "checkpoints", keep_last=2, newest_step=4)
    assert [p.name for p in deleted] == ["step-00000001", "step-00000002"]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000003", "step-00000004"]
    assert prune_checkpoints(tmp_path / "checkpoints", keep_last=None, newest_step=4) == []


def test_prune_never_counts_later_steps_against_the_one_just_written(tmp_path):
    for step in (10, 20, 55):  # 55: a later, damaged directory this run did not write
        write(tmp_path, step)
    (tmp_path / "checkpoints" / "step-00000055" / "optimizer.pt").write_bytes(b"x")
    write(tmp_path, 30)
    deleted = prune_checkpoints(tmp_path / "checkpoints", keep_last=1, newest_step=30)
    assert [p.name for p in deleted] == ["step-00000010", "step-00000020"]
    assert latest_valid_checkpoint(tmp_path / "checkpoints").name == "step-00000030"


@pytest.mark.parametrize(
    "manifest",
    [
        '{"format_version": "x", "files": {}}',
        '{"format_version": 1, "files": {"model.bin": 3}}',
        "[]",
        "[" * 100_000 + "]" * 100_000,  # nested past Python's recursion limit
    ],
)
def test_malformed_manifest_is_a_checkpoint_error(tmp_path, manifest):
    path = write(tmp_path, 5)
    (path / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match="unreadable"):
        verify_checkpoint(path)


def test_latest_passes_over_same_size_corruption(tmp_path):
    write(tmp_path, 10)
    newest = write(tmp_path, 20, b"weights")
    (newest / "model.bin").write_bytes(b"WEIGHTS")  # same size, other bytes
    assert latest_valid_checkpoint(tmp_path / "checkpoints").name == "step-00000010"


def test_rewriting_a_step_replaces_it_whole(tmp_path):
    write(tmp_path, 7, b"old")
    path = write(tmp_path, 7, b"new")
    assert (path / "model.bin").read_bytes() == b"new"
    verify_checkpoint(path)


def test_a_verified_file_is_hashed_once_but_changes_are_still_caught(tmp_path, monkeypatch):
    path = write(tmp_path, 3)
    verify_checkpoint(path)
    calls = []
    monkeypatch.setattr(trainer.checkpoint.verify, "sha256_of", lambda file: calls.append(file) or "x")
    verify_checkpoint(path)
    assert calls == []  # nothing changed since: no second hashing
    (path / "model.bin").write_bytes(b"WEIGHTS")  # same size, new bytes, new mtime
    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(path)


class DiskFull(io.RawIOBase):
    """A file on a disk that fills up after ``allowed`` bytes (ENOSPC, as a real full disk)."""

    def __init__(self, handle, allowed: int):
        self.handle, self.allowed = handle, allowed

    def writable(self):
        return True

    def write(self, data):
        if self.allowed < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.allowed -= len(data)
        return self.handle.write(data)


def torch_save_onto_full_disk(directory):
    (directory / "model.bin").write_bytes(b"weights")
    with (directory / "optimizer.pt").open("wb") as handle:
        torch.save({"t": torch.zeros(1000)}, DiskFull(handle, allowed=64))  # torch adds its own error on top


def safetensors_onto_full_disk(directory):
    raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("writer", [torch_save_onto_full_disk, safetensors_onto_full_disk])
def test_disk_full_names_the_cause_and_removes_only_the_partial(tmp_path, writer):
    earlier = write(tmp_path, 10)
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    with pytest.raises(DiskWriteError) as info:
        write_checkpoint(tmp_path / "checkpoints", 20, [writer], {"run_id": "r", "config": {}})
    message = str(info.value)
    assert "No space left on device" in message and "step-00000020" in message, message
    assert str(tmp_path / "checkpoints") in message and "inline_container" not in message, message
    assert "--resume" in info.value.hint and info.value.exit_code == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000010"]  # no partial left
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before


def test_a_failing_writer_that_is_not_the_disk_keeps_its_error(tmp_path):
    def broken(directory):
        raise TypeError("a bug in a writer")

    with pytest.raises(TypeError, match="a bug in a writer"):
        write_checkpoint(tmp_path / "checkpoints", 3, [broken], {"run_id": "r", "config": {}})
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_damaged_checkpoint_in_the_way_is_refused_not_replaced(tmp_path):
    damaged = write(tmp_path, 7, b"old")
    (damaged / "model.bin").write_bytes(b"OLD")
    with pytest.raises(CheckpointError, match="step-00000007.*does not verify"):
        write(tmp_path, 7, b"new")
    assert (damaged / "model.bin").read_bytes() == b"OLD"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000007"]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(checkpoints_dir, name):
    path = checkpoints_dir / name
    path.mkdir(parents=True)
    (path / "model.bin").write_bytes(b"gigabytes")
    return path


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    checkpoints = write(tmp_path, 10).parent
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed_write = leftover(checkpoints, f".partial-step-00000020-{dead}")
        killed_replace = leftover(checkpoints, f".stale-step-00000010-{dead}")
        killed_prune = leftover(checkpoints, f".pruned-step-00000005-{dead}")
        writing_now = leftover(checkpoints, f".partial-step-00000020-{sleeper.pid}")
        ours = leftover(checkpoints, f".partial-step-00000030-{os.getpid()}")
        not_ours = leftover(checkpoints, ".partial-notes")
        removed = remove_stale_leftovers(checkpoints)
        assert sorted(removed) == sorted([killed_write, killed_replace, killed_prune])
        assert not any(p.exists() for p in removed)
        assert writing_now.is_dir() and ours.is_dir() and not_ours.is_dir()
        verify_checkpoint(checkpoints / "step-00000010")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_leftovers(tmp_path / "no-such-dir") == []


def test_a_new_checkpoint_clears_dead_writers_leftovers(tmp_path):
    checkpoints = write(tmp_path, 10).parent
    stale = leftover(checkpoints, f".partial-step-00000020-{dead_pid()}")
    write(tmp_path, 20)
    assert not stale.exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000010", "step-00000020"]


def test_pruning_moves_a_checkpoint_out_of_sight_before_deleting_it(tmp_path, monkeypatch):
    import trainer.checkpoint.find

    for step in (1, 2):
        write(tmp_path, step)
    seen = []
    monkeypatch.setattr(trainer.checkpoint.find, "_remove", lambda path: seen.append(path.name))
    prune_checkpoints(tmp_path / "checkpoints", keep_last=1, newest_step=2)
    # Killed before the removal ends, a pruned checkpoint is a hidden leftover, not a damaged step-*.
    assert seen == [f".pruned-step-00000001-{os.getpid()}"]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002"]


def make_link(checkpoints, kind, elsewhere):
    link = checkpoints / "step-00000020"
    targets = {
        "dangling": checkpoints / "step-00000099",
        "loop": link,  # a link to itself
        "non-checkpoint": elsewhere / "notes",
        "valid checkpoint elsewhere": elsewhere / "checkpoints" / "step-00000010",
    }
    (elsewhere / "notes").mkdir(parents=True, exist_ok=True)
    link.symlink_to(targets[kind])
    return link


@pytest.mark.parametrize("kind", ["dangling", "loop", "non-checkpoint", "valid checkpoint elsewhere"])
def test_a_step_directory_that_is_a_link_is_refused(tmp_path, kind):
    write(tmp_path / "run", 10)
    write(tmp_path / "other", 10)
    link = make_link(tmp_path / "run" / "checkpoints", kind, tmp_path / "other")
    for given in (link, tmp_path / "run"):  # the link itself, or the run directory holding it
        with pytest.raises(CheckpointError, match="step-00000020: is a symbolic link") as info:
            verify_checkpoint(resolve_resume_path(given))
        assert "\n" not in str(info.value) and "remove the link" in info.value.hint
    assert link.is_symlink()  # left as it is


class RunsCode:
    """Pickled as a call of os.system: what a malicious optimizer.pt holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("error")  # nothing printed beside the one error line
@pytest.mark.parametrize(
    "content, reason",
    [
        ("code", f"asks to load {os.system.__module__}.system, which a tensor file never does"),
        ("garbage", "is not a readable file of plain tensors"),
        ("pickle", "is not a readable file of plain tensors"),
    ],
)
def test_a_tensor_file_that_is_not_plain_tensors_is_one_line(tmp_path, content, reason):
    path = tmp_path / "optimizer.pt"
    marker = tmp_path / "code-ran"
    if content == "code":
        torch.save({"state": RunsCode(marker)}, path)
    elif content == "garbage":
        path.write_bytes(os.urandom(300))
    else:
        import pickle

        path.write_bytes(pickle.dumps({"state": {}}))  # a plain pickle, not a torch file
    with pytest.raises(CheckpointError) as info:
        load_tensors(path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: optimizer.pt {reason}") and "\n" not in message, message
    assert "weights_only" not in message + info.value.hint
    assert not marker.exists()


def test_ctrl_c_while_writing_stays_a_ctrl_c_and_leaves_no_partial(tmp_path):
    def interrupted(directory):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise KeyboardInterrupt from None  # a second Ctrl-C, while handling a disk error

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "checkpoints", 4, [interrupted], {"run_id": "r", "config": {}})
    assert list((tmp_path / "checkpoints").iterdir()) == []

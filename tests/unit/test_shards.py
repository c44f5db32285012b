"""Sharded state files (torch.distributed.checkpoint), in one process: written, read whole, read
into a template, sized per rank, and never a way to run code from an altered file."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch

from trainer.checkpoint.layout import is_sharded
from trainer.checkpoint.shards import MODEL_SHARDS, load_shards, rank_files, read_full, save_shards
from trainer.errors import CheckpointError


def _save(state, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP says it writes as one process
        save_shards(state, directory)


@pytest.fixture
def saved(tmp_path):
    state = {
        "model": {"w": torch.arange(12.0).view(3, 4), "b": torch.ones(4)},
        "optimizer": {"state": {"w": {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95)}]},
    }
    directory = tmp_path / "step" / MODEL_SHARDS
    _save(state, directory)
    return state, directory


def test_read_full_gives_back_what_was_saved_nested(saved):
    state, directory = saved
    back = read_full(directory)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and torch.equal(back["model"]["b"], state["model"]["b"])
    assert back["optimizer"]["param_groups"] == [{"lr": 0.1, "betas": (0.9, 0.95)}]
    assert back["optimizer"]["state"]["w"]["step"].item() == 3.0
    assert is_sharded(directory.parent) and not is_sharded(directory)


def test_load_shards_fills_a_template_in_place(saved):
    state, directory = saved
    template = {"model": {"w": torch.zeros(3, 4), "b": torch.zeros(4)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_shards(template, directory)
    assert torch.equal(template["model"]["w"], state["model"]["w"])


def test_rank_files_sizes_each_ranks_file(saved):
    _, directory = saved
    sizes = rank_files(directory)
    assert list(sizes) == [0] and sizes[0] == (directory / "__0_0.distcp").stat().st_size > 48 * 4


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_metadata_file_that_would_run_code_is_refused_without_running_it(saved, tmp_path, monkeypatch):
    _, directory = saved
    monkeypatch.chdir(tmp_path)
    (directory / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError, match=r"model_shards/\.metadata asks to load (posix|os|nt)\.system") as info:
        read_full(directory)
    assert not (tmp_path / "ran-code").exists() and info.value.exit_code == 2


def test_a_non_tensor_value_that_would_run_code_is_refused(tmp_path, monkeypatch):
    directory = tmp_path / MODEL_SHARDS
    monkeypatch.chdir(tmp_path)
    _save({"model": {"w": torch.ones(2)}, "extra": _RunsCode()}, directory)
    assert not (tmp_path / "ran-code").exists()  # saving pickles the object; it does not call it
    with pytest.raises(CheckpointError, match="model_shards does not hold readable shards"):
        read_full(directory)
    assert not (tmp_path / "ran-code").exists()


def test_a_truncated_shard_file_is_one_checkpoint_error(saved):
    _, directory = saved
    shard = directory / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="model_shards does not hold readable shards"):
        read_full(directory)

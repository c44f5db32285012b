"""The registry in-process: index, import (local and Hub cache), lineage, delete, validate."""

import errno
import json
import os
import shutil

import pytest

from registry.hub import count_parameters, import_model
from registry.manage import delete_model, validate_registry
from registry.store import LOCK_FILE, ModelEntry, Registry, validate_name
from tests.conftest import serve_from_hub_cache, tiny_config
from trainer.errors import ImportModelError, ModelNotFoundError, RegistryError, StorageError, UsageError
from trainer.models.register import register_checkpoint


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "models")


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "a", "x_y-z.1", "a" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "", "A", "-x", ".hidden", "a" * 65, "..", "a b"])
def test_invalid_names(name):
    with pytest.raises(UsageError):
        validate_name(name)


@pytest.mark.parametrize("name", ["registry.json", "registry.lock", "x.lock"])
def test_names_of_the_registrys_own_files_are_refused(registry, tiny_qwen_dir, name):
    with pytest.raises(UsageError, match="registry's own files") as info:
        import_model(registry, str(tiny_qwen_dir), name=name)
    assert "--name" in info.value.hint
    assert not registry.root.exists() or validate_registry(registry) == []


def test_import_local_records_everything(registry, tiny_qwen_dir):
    entry = import_model(registry, str(tiny_qwen_dir), name="tiny")
    assert (entry.source, entry.architecture_type, entry.model_type) == ("local", "qwen", "qwen2")
    from transformers import AutoModelForCausalLM

    assert entry.num_parameters == AutoModelForCausalLM.from_pretrained(tiny_qwen_dir).num_parameters()
    model_dir = registry.model_dir(entry)
    assert set(entry.files) == {p.name for p in model_dir.iterdir()}
    assert entry.disk_size_bytes == sum(p.stat().st_size for p in model_dir.iterdir())
    assert registry.get("tiny") == entry
    assert validate_registry(registry) == []
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".importing")]


def test_default_name_and_duplicates(registry, tiny_qwen_dir):
    assert import_model(registry, str(tiny_qwen_dir)).name == "tiny-qwen"
    with pytest.raises(UsageError, match="already in the registry") as info:
        import_model(registry, str(tiny_qwen_dir))
    assert "--force" in info.value.hint
    import_model(registry, str(tiny_qwen_dir), force=True)
    assert list(registry.entries()) == ["tiny-qwen"] and validate_registry(registry) == []


def test_remote_code_and_pickle_are_refused_unless_allowed(registry, tiny_qwen_dir, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(tiny_qwen_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ImportModelError, match="custom code"):
        import_model(registry, str(remote))
    assert import_model(registry, str(remote), trust_remote_code=True).name == "remote"
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_qwen_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ImportModelError, match="pickle") as info:
        import_model(registry, str(pickled))
    assert info.value.exit_code == 2
    assert "pytorch_model.bin" in import_model(registry, str(pickled), allow_pickle=True).files


def test_hub_import_from_prefilled_cache_offline(registry, tiny_qwen_dir, tmp_path, monkeypatch):
    sha = serve_from_hub_cache(monkeypatch, tmp_path / "hub", tiny_qwen_dir, "acme/tiny-qwen")
    snapshot = tmp_path / "hub" / "models--acme--tiny-qwen" / "snapshots" / sha
    (snapshot / "README.md").write_text("not needed, not imported")
    entry = import_model(registry, "acme/tiny-qwen")
    assert (entry.name, entry.model_id, entry.revision, entry.source) == (
        "tiny-qwen",
        "acme/tiny-qwen",
        sha,
        "huggingface",
    )
    assert "README.md" not in entry.files
    with pytest.raises(ImportModelError, match="not in the local cache") as info:
        import_model(registry, "acme/absent")
    assert info.value.exit_code == 1


def test_unknown_source(registry):
    with pytest.raises(UsageError, match="neither a local directory nor a Hub repo id"):
        import_model(registry, "not a repo")


def test_lineage_children_and_delete_rules(registry, tiny_qwen_dir):
    import_model(registry, str(tiny_qwen_dir), name="base")
    with registry.editing() as entries:
        base = entries["base"]
        for name, parent in (("ft1", "base"), ("ft2", "ft1")):
            entries[name] = ModelEntry.from_dict(
                {**base.to_dict(), "name": name, "fine_tuned_from": parent, "source": "finetune"}
            )
    assert registry.lineage("ft2") == ["base", "ft1", "ft2"]
    assert registry.children("base") == ["ft1"]
    with pytest.raises(UsageError, match="ft1"):
        delete_model(registry, "base")
    with pytest.raises(ModelNotFoundError, match="did you mean 'base'"):
        registry.get("bse")


def test_delete_removes_directory_and_never_follows_links_out(registry, tiny_qwen_dir, tmp_path):
    import_model(registry, str(tiny_qwen_dir), name="real")
    delete_model(registry, "real")
    assert registry.entries() == {} and not (registry.root / "real").exists()
    outside = tmp_path / "precious"
    shutil.copytree(tiny_qwen_dir, outside)
    import_model(registry, str(tiny_qwen_dir), name="linked")
    shutil.rmtree(registry.root / "linked")
    (registry.root / "linked").symlink_to(outside, target_is_directory=True)
    assert any("outside the registry" in p for p in validate_registry(registry))
    delete_model(registry, "linked")
    assert (outside / "model.safetensors").is_file() and not (registry.root / "linked").exists()


def test_validate_reports_every_problem(registry, tiny_qwen_dir):
    import_model(registry, str(tiny_qwen_dir), name="a")
    import_model(registry, str(tiny_qwen_dir), name="b")
    (registry.root / "a" / "tokenizer.json").unlink()
    weights = registry.root / "b" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # same size, other bytes
    (registry.root / "orphan").mkdir()
    (registry.root / ".importing-c-1").mkdir()
    with registry.editing() as entries:
        entries["b"].fine_tuned_from = "gone"
    problems = validate_registry(registry)
    text = "\n".join(problems)
    for fragment in (
        "a: file",
        "tokenizer.json is missing",
        "b: file",
        "sha256",
        "dangling",
        "orphan",
        ".importing-c-1",
    ):
        assert fragment in text
    assert "sha256" not in "\n".join(validate_registry(registry, quick=True))


@pytest.mark.parametrize("broken", ["{broken", "[" * 100_000 + "]" * 100_000])  # the second nests too deep
def test_corrupt_index_is_reported_and_never_overwritten(registry, tiny_qwen_dir, broken):
    registry.root.mkdir(parents=True)
    registry.index_path.write_text(broken)
    with pytest.raises(RegistryError) as info:
        registry.entries()
    assert info.value.exit_code == 5
    with pytest.raises(RegistryError):
        import_model(registry, str(tiny_qwen_dir), name="x")
    assert registry.index_path.read_text() == broken
    assert "unreadable" in validate_registry(registry)[0]


@pytest.fixture
def custom_run(tmp_path, corpus_file):
    """A finished 2-step run of a tiny custom Transformer."""
    from trainer.run.execute import run_training

    config = tiny_config(corpus_file, n_layers=1, max_steps=2, seed=1, eval_cadence=None, sampling_cadence=None)
    (tmp_path / "run").mkdir()
    return run_training(config, tmp_path / "run", console=False)


def test_register_custom_checkpoint(registry, custom_run):
    result = custom_run
    entry = register_checkpoint(registry, result.checkpoint, "my-char")
    assert (entry.source, entry.architecture_type, entry.fine_tuned_from) == ("finetune", "custom-transformer", None)
    assert (entry.run_id, entry.step) == (result.run_id, 2) and entry.config_hash
    assert entry.tokenizer.startswith("char:") and entry.num_parameters > 0
    assert "optimizer.pt" not in entry.files and validate_registry(registry) == []
    assert count_parameters(registry.model_dir(entry)) == entry.num_parameters
    with pytest.raises(UsageError, match="already"):
        register_checkpoint(registry, result.checkpoint, "my-char")


def test_import_never_removes_a_directory_it_does_not_own(registry, tiny_qwen_dir):
    (registry.root / "foo").mkdir(parents=True)
    (registry.root / "foo" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="no registry entry uses it"):
        import_model(registry, str(tiny_qwen_dir), name="foo")
    assert (registry.root / "foo" / "notes.txt").read_text() == "mine"
    assert registry.entries() == {}


def test_hand_edited_local_path_outside_the_root_is_refused(registry, tiny_qwen_dir, tmp_path):
    import_model(registry, str(tiny_qwen_dir), name="a")
    victim = tmp_path / "victim"
    victim.mkdir()
    index = json.loads(registry.index_path.read_text())
    index["entries"]["a"]["local_path"] = "../victim"
    registry.index_path.write_text(json.dumps(index))
    with pytest.raises(RegistryError, match="local_path"):
        delete_model(registry, "a")
    assert victim.is_dir() and "local_path" in validate_registry(registry)[0]


def hand_edit(registry, name, **changes):
    """Add entry ``name`` to the index as a person editing registry.json would: a copy of
    the first entry with ``changes``."""
    index = json.loads(registry.index_path.read_text())
    first = next(iter(index["entries"].values()))
    index["entries"][name] = {**first, "name": name, **changes}
    registry.index_path.write_text(json.dumps(index))


def leftovers(registry, prefix):
    return [p.name for p in registry.root.iterdir() if p.name.startswith(prefix)]


def test_an_entry_whose_local_path_is_the_index_makes_it_unreadable(registry, tiny_qwen_dir):
    import_model(registry, str(tiny_qwen_dir), name="a")
    hand_edit(registry, "b", local_path="registry.json")
    index = registry.index_path.read_text()
    with pytest.raises(RegistryError, match="registry's own files") as info:
        delete_model(registry, "b")
    assert info.value.exit_code == 5
    assert registry.index_path.read_text() == index and not leftovers(registry, ".deleting-")
    assert "registry's own files" in validate_registry(registry)[0]


def test_two_entries_sharing_a_directory_are_reported_and_never_deleted(registry, tiny_qwen_dir):
    import_model(registry, str(tiny_qwen_dir), name="a")
    hand_edit(registry, "b", local_path="a")
    assert any("'a', 'b'" in p and "share" in p for p in validate_registry(registry))
    for name in ("a", "b"):
        with pytest.raises(RegistryError, match="shares its directory") as info:
            delete_model(registry, name)
        assert info.value.exit_code == 5
    assert sorted(registry.entries()) == ["a", "b"] and not leftovers(registry, ".deleting-")
    assert validate_registry(registry, quick=True) == [p for p in validate_registry(registry) if "share" in p]


def test_an_entry_whose_local_path_is_a_file_is_never_deleted(registry, tiny_qwen_dir):
    import_model(registry, str(tiny_qwen_dir), name="a")
    (registry.root / "notes").write_text("mine")
    hand_edit(registry, "b", local_path="notes")
    assert any("is a file, not a model directory" in p for p in validate_registry(registry))
    with pytest.raises(RegistryError, match="is a file, not a model directory") as info:
        delete_model(registry, "b")
    assert info.value.exit_code == 5
    assert (registry.root / "notes").read_text() == "mine" and "b" in registry.entries()
    assert not leftovers(registry, ".deleting-")


def fill_the_disk_at_the_index_write(monkeypatch):
    """The disk fills up while the index's temporary copy is written, half-way through."""

    def no_space(data, handle, **kwargs):
        handle.write('{"schema_version": 1, "entr')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", no_space)


def registry_contents(registry):
    return sorted(p.name for p in registry.root.iterdir() if p.name != LOCK_FILE)


@pytest.mark.parametrize("name, force", [("b", False), ("a", True)])  # a new model; a replacement
def test_an_import_that_cannot_write_the_index_is_rolled_back(registry, tiny_qwen_dir, monkeypatch, name, force):
    import_model(registry, str(tiny_qwen_dir), name="a")
    index = registry.index_path.read_text()
    fill_the_disk_at_the_index_write(monkeypatch)
    with pytest.raises(StorageError, match="No space left on device") as info:
        import_model(registry, str(tiny_qwen_dir), name=name, force=force)
    monkeypatch.undo()  # space is freed
    assert str(registry.index_path) in info.value.message and info.value.exit_code == 1
    assert registry.index_path.read_text() == index
    assert registry_contents(registry) == ["a", "registry.json"] and validate_registry(registry) == []
    import_model(registry, str(tiny_qwen_dir), name=name, force=force)  # the same command now works
    assert validate_registry(registry) == []


def test_a_delete_that_cannot_write_the_index_is_rolled_back(registry, tiny_qwen_dir, monkeypatch):
    import_model(registry, str(tiny_qwen_dir), name="a")
    fill_the_disk_at_the_index_write(monkeypatch)
    with pytest.raises(StorageError, match="No space left on device"):
        delete_model(registry, "a")
    monkeypatch.undo()
    assert registry_contents(registry) == ["a", "registry.json"] and validate_registry(registry) == []
    delete_model(registry, "a")
    assert registry_contents(registry) == ["registry.json"] and validate_registry(registry) == []


def test_name_with_trailing_newline_is_refused():
    with pytest.raises(UsageError):
        validate_name("evil\n")


@pytest.mark.parametrize("damage", ["tokenizer_config.json", "model.safetensors"])
def test_a_failed_import_leaves_nothing_behind(registry, tiny_qwen_dir, tmp_path, damage):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_qwen_dir, broken)
    (broken / damage).write_bytes(b"{not what it should be")
    with pytest.raises(ImportModelError) as info:
        import_model(registry, str(broken))
    assert info.value.exit_code == 2
    leftovers = list(registry.root.iterdir()) if registry.root.exists() else []
    assert not [p for p in leftovers if p.name.startswith(".importing")]
    assert validate_registry(registry) == [] and registry.entries() == {}


def test_validate_skips_an_import_in_progress(registry, tiny_qwen_dir):
    from filelock import FileLock

    import_model(registry, str(tiny_qwen_dir), name="a")
    staged = registry.root / ".importing-b-12345678"
    staged.mkdir()
    with FileLock(f"{staged}.lock"):
        assert validate_registry(registry) == []
    assert any("interrupted import" in p for p in validate_registry(registry))


def test_links_and_unknown_files_inside_a_model_are_reported(registry, tiny_qwen_dir, tmp_path):
    import_model(registry, str(tiny_qwen_dir), name="a")
    model_dir = registry.root / "a"
    (tmp_path / "elsewhere.json").write_text((model_dir / "config.json").read_text())
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").symlink_to(tmp_path / "elsewhere.json")
    (model_dir / "extra.txt").write_text("?")
    text = "\n".join(validate_registry(registry))
    assert "config.json is a symbolic link" in text and "extra.txt is not one of the entry's files" in text


@pytest.mark.parametrize("linked", ["the directory", "a file"])
def test_training_refuses_a_model_linked_out_of_the_registry(registry, tiny_qwen_dir, tmp_path, linked):
    from trainer.config.schema import TrainingConfig
    from trainer.models.source import select_model, tokenizer_directory

    import_model(registry, str(tiny_qwen_dir), name="a")
    outside = tmp_path / "outside"
    shutil.copytree(registry.root / "a", outside)
    if linked == "the directory":
        shutil.rmtree(registry.root / "a")
        (registry.root / "a").symlink_to(outside, target_is_directory=True)
    else:
        (registry.root / "a" / "model.safetensors").unlink()
        (registry.root / "a" / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(RegistryError, match="link") as info:
        select_model(TrainingConfig(model_name="a", registry_dir=str(registry.root)))
    assert info.value.exit_code == 5 and "validate-registry" in info.value.hint
    with pytest.raises(RegistryError, match="link"):  # nor as another model's tokenizer
        tokenizer_directory(TrainingConfig(tokenizer="a", registry_dir=str(registry.root)))


def test_register_from_run_directory_leaves_optimizer_and_manifest(registry, custom_run):
    entry = register_checkpoint(registry, custom_run.run_dir, "from-run-dir")
    assert set(entry.files) == {"model.safetensors", "model_config.json", "tokenizer.json", "trainer_state.json"}


def test_an_import_that_cannot_copy_its_files_names_the_disk_and_leaves_nothing(registry, tiny_qwen_dir, monkeypatch):
    import errno
    import shutil as shutil_module

    def full_disk(source, target, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(shutil_module, "copyfile", full_disk)
    with pytest.raises(StorageError, match="cannot copy the model's files .*No space left on device") as info:
        import_model(registry, str(tiny_qwen_dir), name="a")
    monkeypatch.undo()
    assert info.value.exit_code == 1
    assert not any(p.name.startswith(".importing-") for p in registry.root.iterdir()) and "a" not in registry.entries()
    import_model(registry, str(tiny_qwen_dir), name="a")  # once there is room, the same command works


def test_a_deeply_nested_config_json_is_refused_as_unreadable(registry, tiny_qwen_dir, tmp_path):
    broken = tmp_path / "nested"
    shutil.copytree(tiny_qwen_dir, broken)
    (broken / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ImportModelError, match="not readable JSON") as info:
        import_model(registry, str(broken), name="nested")
    assert info.value.exit_code == 2

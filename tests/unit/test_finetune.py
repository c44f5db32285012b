"""Fine-tuning registry models in-process: adapters, lineage, exact resume, tokenizers, branches."""

import json
import warnings

import pytest
import torch

from registry.hub import import_model
from registry.store import Registry
from tests.conftest import read_events, step_losses, tiny_config
from trainer.config.compose import ConfigLayer
from trainer.errors import ConfigError, DataError, ModelNotFoundError, UsageError
from trainer.models.hf_adapter import HFCausalLMAdapter
from trainer.models.loading import load_adapter
from trainer.models.model_card import write_model_card
from trainer.models.register import register_checkpoint
from trainer.run.execute import run_training
from trainer.run.plan import plan_run
from trainer.run.start import start_run

transformers = pytest.importorskip("transformers")


@pytest.fixture
def registry(tmp_path, tiny_qwen_dir):
    registry = Registry(tmp_path / "models")
    import_model(registry, str(tiny_qwen_dir), name="tiny-qwen")
    return registry


def qwen_config(corpus_file, registry, **changes):
    values = dict(
        model_name="tiny-qwen",
        registry_dir=str(registry.root),
        max_seq_len=48,
        batch_size=4,
        max_steps=8,
        learning_rate=3e-3,
        checkpoint_cadence=4,
        sampling_cadence=4,
        sampling_max_length=12,
    )
    values.update(changes)
    return tiny_config(corpus_file, **values)


def train(config, run_dir, **kwargs):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_training(config, run_dir, console=False, **kwargs)


def test_loss_goes_through_our_shift_only_once(registry):
    """The adapter's loss equals cross entropy of logits[t] against targets[t], where targets
    are the inputs shifted by one already; transformers' labels= path agrees when given the
    unshifted sequence (it shifts inside)."""
    adapter = load_adapter(registry.model_dir(registry.get("tiny-qwen")), "qwen", dropout=0.0)
    ids = torch.randint(0, 320, (2, 17), generator=torch.Generator().manual_seed(0))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    ours = adapter.loss(inputs, targets)
    theirs = adapter.model(input_ids=ids, labels=ids).loss  # HF shifts: position t predicts t+1
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    shifted_twice = adapter.model(input_ids=inputs, labels=targets).loss
    assert shifted_twice.item() != pytest.approx(ours.item(), rel=1e-3)


def test_inference_logits_and_generation(registry):
    adapter = load_adapter(registry.model_dir(registry.get("tiny-qwen")), "qwen", dropout=0.0)
    assert isinstance(adapter, HFCausalLMAdapter) and adapter.max_positions == 128
    prompt = adapter.tokenizer.encode("The value")
    logits = adapter.model(input_ids=prompt.view(1, -1)).logits
    assert logits.shape == (1, len(prompt), 320) and torch.isfinite(logits).all()
    adapter.model.eval()
    rng_before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated generation path, no generation-flag warnings
        first = adapter.generate(prompt, 10, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's randomness untouched
    again = adapter.generate(prompt, 10, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and torch.equal(first[: len(prompt)], prompt) and len(first) > len(prompt)
    assert adapter.tokenizer.decode(first).startswith("The value")
    greedy = adapter.generate(prompt, 5, 0.0, torch.Generator())
    assert len(greedy) <= len(prompt) + 5


def test_fine_tune_records_metadata_lineage_and_hf_checkpoints(tmp_path, corpus_file, registry):
    result = train(qwen_config(corpus_file, registry), tmp_path / "run")
    start = read_events(result.run_dir)[0]
    model = start["model"]
    assert (model["model_name"], model["architecture_type"], model["source"]) == ("tiny-qwen", "qwen", "local")
    assert model["num_parameters"] == registry.get("tiny-qwen").num_parameters and model["disk_size_bytes"] > 0
    # n_layers=2 and d_model=32 agree with the model; dropout=0.1 differs but is the default,
    # which the user never set: only n_heads=2 is news.
    assert model["config_settings_overridden"] == ["n_heads=2 (the model has 4)"]
    assert start["fine_tune"] == "new fine-tune of tiny-qwen"
    assert start["lineage"]["fine_tuned_from"] == "tiny-qwen" and start["lineage"]["chain"] == ["tiny-qwen"]
    assert start["tokenizer"]["identifier"] == "hf:Qwen2Tokenizer:320"
    samples = [e["text"] for e in read_events(result.run_dir) if e["event"] == "sample"]
    assert len(samples) == 2 and all(s.startswith("The") for s in samples)

    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert state["lineage"]["fine_tuned_from"] == "tiny-qwen" and state["lineage"]["fine_tune_started_at"]
    assert state["tokenizer"] == "hf:Qwen2Tokenizer:320"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(result.checkpoint))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(result.checkpoint))
    assert len(tokenizer) == 320 and loaded.config.model_type == "qwen2"
    with torch.no_grad():
        saved = dict(loaded.named_parameters())["model.embed_tokens.weight"]
    base = transformers.AutoModelForCausalLM.from_pretrained(str(registry.model_dir(registry.get("tiny-qwen"))))
    assert not torch.equal(saved, dict(base.named_parameters())["model.embed_tokens.weight"])  # it trained


def test_fine_tune_loss_decreases(tmp_path, corpus_file, registry):
    config = qwen_config(
        corpus_file, registry, max_steps=60, checkpoint_cadence=None, sampling_cadence=None, eval_cadence=None
    )
    losses = [loss for _, loss in sorted(step_losses(train(config, tmp_path / "r").run_dir).items())]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.5, (first, last)


def test_resume_of_a_fine_tune_is_bit_identical(tmp_path, corpus_file, registry):
    straight = train(qwen_config(corpus_file, registry), tmp_path / "straight").run_dir
    parted = train(qwen_config(corpus_file, registry, max_steps=4, lr_decay_steps=8), tmp_path / "parted").run_dir
    config, plan = plan_run([ConfigLayer("test", {"resume": str(parted), "max_steps": 8})])
    train(config, parted, resume=plan)
    assert step_losses(straight) == step_losses(parted)
    final = "checkpoints/step-00000008/model.safetensors"
    assert (straight / final).read_bytes() == (parted / final).read_bytes()
    resumed = [e for e in read_events(parted) if e["event"] == "resume"][0]
    assert resumed["fine_tune"] == "continuing the fine-tune of tiny-qwen"
    state = json.loads((parted / "checkpoints/step-00000008/trainer_state.json").read_text())
    first = json.loads((parted / "checkpoints/step-00000004/trainer_state.json").read_text())
    assert state["lineage"] == first["lineage"]  # the fine-tune's start time and chain carry over


def test_registered_fine_tune_is_a_model_with_a_chain(tmp_path, corpus_file, registry):
    result = train(qwen_config(corpus_file, registry, max_steps=2), tmp_path / "run")
    entry = register_checkpoint(registry, result.checkpoint, "tiny-ft")
    assert (entry.fine_tuned_from, entry.architecture_type, entry.source) == ("tiny-qwen", "qwen", "finetune")
    assert "README.md" in entry.files and "optimizer.pt" not in entry.files
    second = train(qwen_config(corpus_file, registry, model_name="tiny-ft", max_steps=2), tmp_path / "second")
    lineage = read_events(second.run_dir)[0]["lineage"]
    assert lineage["fine_tuned_from"] == "tiny-ft" and lineage["chain"] == ["tiny-qwen", "tiny-ft"]


def test_branch_registers_the_checkpoint_and_starts_a_new_fine_tune(tmp_path, corpus_file, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train(qwen_config(corpus_file, registry), tmp_path / "run")
    middle = first.run_dir / "checkpoints" / "step-00000004"
    before = registry.get("tiny-qwen")
    layers = [ConfigLayer("test", {"resume": str(middle), "branch": "tiny-branch", "learning_rate": 1e-3})]
    branch_dir = tmp_path / "branch-run"
    result = start_run(layers, lambda: branch_dir.mkdir() or branch_dir, overrides=None, console=False)
    entry = registry.get("tiny-branch")
    assert entry.fine_tuned_from == "tiny-qwen" and entry.step == 4 and registry.get("tiny-qwen") == before
    start = read_events(result.run_dir)[0]
    assert start["config"]["model_name"] == "tiny-branch" and start["config"]["learning_rate"] == 1e-3
    assert start["lineage"]["chain"] == ["tiny-qwen", "tiny-branch"]
    assert start["lineage"]["branched_from"] == str(middle) and start["fine_tune"].startswith("new branch tiny-branch")
    assert result.steps == 8 and start["config"]["branch"] is None  # a new schedule from step 0
    with pytest.raises(UsageError, match="already in the registry"):
        plan_run([ConfigLayer("test", {"resume": str(middle), "branch": "tiny-branch"})])
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        plan_run([ConfigLayer("test", {"branch": "other"})])


def test_unknown_model_and_missing_files_stop_before_loading(tmp_path, corpus_file, registry):
    with pytest.raises(ModelNotFoundError, match="available: tiny-qwen"):
        plan_run([ConfigLayer("t", {"model_name": "tiny-qwn", "registry_dir": str(registry.root)})])
    (registry.root / "tiny-qwen" / "model.safetensors").unlink()
    with pytest.raises(UsageError, match="model.safetensors is missing") as info:
        plan_run([ConfigLayer("t", {"model_name": "tiny-qwen", "registry_dir": str(registry.root)})])
    assert "validate-registry" in info.value.hint and info.value.exit_code == 2


def test_tokenizer_override(tmp_path, corpus_file, registry, tiny_qwen_dir):
    bigger = tmp_path / "bigger-qwen"
    from tests.conftest import build_tiny_qwen

    build_tiny_qwen(bigger, vocab_size=400)
    import_model(registry, str(bigger), name="big-vocab")
    with pytest.raises(ConfigError, match="has 400 tokens but the model embeds only 320"):
        train(qwen_config(corpus_file, registry, tokenizer="big-vocab"), tmp_path / "refused")
    with pytest.raises(ConfigError, match="neither a directory nor a model"):
        plan_run([ConfigLayer("t", {"tokenizer": "nope", "registry_dir": str(registry.root)})])
    # A same-size tokenizer from a directory: used, warned about, recorded.
    result = train(qwen_config(corpus_file, registry, tokenizer=str(tiny_qwen_dir), max_steps=2), tmp_path / "ok")
    start = read_events(result.run_dir)[0]
    assert start["tokenizer"] == {"identifier": "hf:Qwen2Tokenizer:320", "override": str(tiny_qwen_dir)}
    # With model_name null, a new custom Transformer takes the override's vocabulary.
    custom = train(tiny_config(corpus_file, tokenizer=str(tiny_qwen_dir), max_steps=2), tmp_path / "custom")
    start = read_events(custom.run_dir)[0]
    assert start["model"]["vocab_size"] == 320 and start["model"]["architecture_type"] == "custom-transformer"
    assert (custom.checkpoint / "tokenizer_config.json").is_file()


def test_model_card_names_the_hub_base_model(tmp_path):
    from huggingface_hub import ModelCard

    lineage = {"model_id": "Qwen/Qwen2.5-0.5B", "fine_tuned_from": "qwen-0.5b-base", "chain": ["qwen-0.5b-base"]}
    write_model_card(tmp_path, lineage)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.base_model_relation == "finetune"
    local = tmp_path / "local"
    local.mkdir()
    write_model_card(local, {"model_id": None, "fine_tuned_from": "tiny-qwen", "chain": ["tiny-qwen"]})
    assert ModelCard.load(local / "README.md").data.base_model is None  # no Hub id to name


def test_unloadable_weights_are_one_error_with_what_to_do(tmp_path, corpus_file, registry):
    weights = registry.root / "tiny-qwen" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(b"\0" * size)  # same size: passes the quick check, fails to load
    with pytest.raises(UsageError, match="could not be loaded") as info:
        train(qwen_config(corpus_file, registry), tmp_path / "run")
    assert "validate-registry" in info.value.hint


def test_a_branch_whose_run_fails_before_saving_is_unregistered(tmp_path, corpus_file, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train(qwen_config(corpus_file, registry, max_steps=2), tmp_path / "run")
    short = tmp_path / "short.txt"
    short.write_text("too short for one window")
    layers = [ConfigLayer("t", {"resume": str(first.checkpoint), "branch": "tiny-b", "data_path": str(short)})]
    branch_dir = tmp_path / "branch-run"
    with pytest.raises(Exception, match="too short"):
        start_run(layers, lambda: branch_dir.mkdir() or branch_dir, overrides=None, console=False)
    assert "tiny-b" not in registry.entries()  # the same command can be retried
    assert not branch_dir.exists()  # and no run directory is left behind


def test_a_run_that_fails_after_its_directory_exists_leaves_none(tmp_path, corpus_file, registry):
    """Too short for the model's own tokenizer is known only once the text is tokenized, after
    the run directory exists: the directory goes again, since nothing was trained in it."""
    short = tmp_path / "short.txt"
    short.write_text("a text of a few words, fewer tokens than one window")
    run_dir = tmp_path / "run"
    layers = [ConfigLayer("t", {**qwen_config(corpus_file, registry).to_dict(), "data_path": str(short)})]
    with pytest.raises(DataError, match="too short"):
        start_run(layers, lambda: run_dir.mkdir() or run_dir, overrides=None, console=False)
    assert not run_dir.exists()


def test_tokenizer_directory_without_tokenizer_files_is_refused(tmp_path, registry):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="without tokenizer files") as info:
        plan_run([ConfigLayer("t", {"tokenizer": str(empty), "registry_dir": str(registry.root)})])
    assert info.value.exit_code == 2


def test_models_and_tokenizers_load_with_trust_remote_code_false(tiny_qwen_dir, monkeypatch):
    seen = {}
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = auto.from_pretrained

        def spy(*args, _original=original, _name=auto.__name__, **kwargs):
            seen[_name] = kwargs.get("trust_remote_code", "not passed")
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    load_adapter(tiny_qwen_dir, "qwen", dropout=0.0)
    assert seen == {"AutoModelForCausalLM": False, "AutoTokenizer": False}


def with_custom_code(source, directory, file, auto_class):
    """A copy of ``source`` whose ``file`` asks transformers to import modeling_evil.py."""
    import shutil

    shutil.copytree(source, directory)
    marker = directory.parent / "custom-code-ran"
    (directory / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    settings = json.loads((directory / file).read_text())
    settings["auto_map"] = {auto_class: "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    if file == "config.json":
        settings["model_type"] = "evil-custom"  # not a type transformers knows: it would ask to run the code
    (directory / file).write_text(json.dumps(settings))
    return marker


@pytest.mark.parametrize(
    "file, auto_class", [("config.json", "AutoModelForCausalLM"), ("tokenizer_config.json", "AutoTokenizer")]
)
def test_a_model_that_asks_to_run_its_own_code_is_refused(tmp_path, tiny_qwen_dir, file, auto_class):
    directory = tmp_path / "custom"
    marker = with_custom_code(tiny_qwen_dir, directory, file, auto_class)
    with pytest.raises(UsageError) as info:
        load_adapter(directory, "qwen", dropout=0.0)
    assert (
        str(info.value)
        == f"{directory / file} asks to run code of its own (auto_map); lmrunner never runs a model's code"
    )
    assert info.value.exit_code == 2 and not marker.exists()

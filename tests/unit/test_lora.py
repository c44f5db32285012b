"""LoRA through peft, in-process, on the tiny Qwen2 and on a registered custom Transformer:
only the adapters train, checkpoints hold the adapter alone and load with peft, resume is
exact, adapters register and train on, gradient checkpointing leaves the losses alone."""

import json

import pytest
import torch
from safetensors.torch import load_file

from registry.hub import import_model
from registry.manage import delete_model, validate_registry
from registry.store import Registry
from tests.conftest import read_events, serve_from_hub_cache, step_losses, tiny_config
from trainer.config.compose import ConfigLayer
from trainer.errors import ConfigError, UsageError
from trainer.models.loading import load_adapter
from trainer.models.lora import load_lora
from trainer.models.register import register_checkpoint
from trainer.run.execute import run_training
from trainer.run.plan import plan_run
from trainer.training.loop import Trainer

peft = pytest.importorskip("peft")


@pytest.fixture
def registry(tmp_path, tiny_qwen_dir, corpus_file, monkeypatch):
    """tiny-qwen, imported from a (pre-filled, offline) Hub cache as acme/tiny-qwen, and
    tiny-custom: a custom Transformer trained for two steps and registered."""
    registry = Registry(tmp_path / "models")
    serve_from_hub_cache(monkeypatch, tmp_path / "hub", tiny_qwen_dir, "acme/tiny-qwen")
    import_model(registry, "acme/tiny-qwen")
    scratch = train(tiny_config(corpus_file, max_steps=2, sampling_cadence=None), tmp_path / "scratch")
    register_checkpoint(registry, scratch.checkpoint, "tiny-custom")
    return registry


def lora_config(corpus_file, registry, model="tiny-qwen", **changes):
    values = dict(
        model_name=model,
        registry_dir=str(registry.root),
        max_seq_len=32,
        batch_size=4,
        max_steps=6,
        learning_rate=1e-2,
        checkpoint_cadence=3,
        eval_cadence=3,
        sampling_cadence=None,
        lora_r=4,
        lora_alpha=8.0,
    )
    values.update(changes)
    return tiny_config(corpus_file, **values)


def train(config, run_dir, **kwargs):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_training(config, run_dir, console=False, **kwargs)


MODELS = ["tiny-qwen", "tiny-custom"]


@pytest.mark.parametrize("model", MODELS)
def test_a_lora_step_changes_the_adapters_and_nothing_else(tmp_path, corpus_file, registry, monkeypatch, model):
    before, after = {}, {}
    original = Trainer.training_step

    def training_step(self, batch):
        if self.step == 0:
            before.update({n: p.detach().clone() for n, p in self.model.named_parameters()})
        loss = original(self, batch)
        after.update({n: p.detach().clone() for n, p in self.model.named_parameters()})
        return loss

    monkeypatch.setattr(Trainer, "training_step", training_step)
    result = train(lora_config(corpus_file, registry, model), tmp_path / "run")
    adapters = [n for n in before if "lora_" in n]
    frozen = [n for n in before if "lora_" not in n]
    assert adapters and frozen
    assert all(torch.equal(before[n], after[n]) for n in frozen)  # the base, bit for bit
    assert all(not torch.equal(before[n], after[n]) for n in adapters if "lora_B" in n)  # B starts at 0
    start = read_events(result.run_dir)[0]["model"]
    adapter_count = sum(before[n].numel() for n in adapters)
    assert start["trainable_parameters"] == adapter_count < start["num_parameters"]
    assert start["lora"]["r"] == 4 and start["base"]["registry_name"] == model


@pytest.mark.parametrize("model", MODELS)
def test_a_lora_checkpoint_is_the_adapter_alone_and_peft_loads_it(tmp_path, corpus_file, registry, model):
    result = train(lora_config(corpus_file, registry, model), tmp_path / "run")
    files = {p.name for p in result.checkpoint.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "lmrunner_base.json", "optimizer.pt"} <= files
    assert not files & {"model.safetensors", "config.json", "model_config.json"}
    saved = load_file(str(result.checkpoint / "adapter_model.safetensors"))
    assert saved and all("lora_" in name for name in saved)
    base_ref = json.loads((result.checkpoint / "lmrunner_base.json").read_text())
    assert base_ref["registry_name"] == model and len(base_ref["weights_sha256"]) == 64
    if model == "tiny-qwen":
        assert (base_ref["model_id"], base_ref["revision"]) == ("acme/tiny-qwen", registry.get(model).revision)
        card = (result.checkpoint / "README.md").read_text()
        assert "base_model: acme/tiny-qwen" in card and "base_model_relation: adapter" in card
    # peft's own loader, on the base as the registry holds it, gives lmrunner's model back
    base = load_adapter(registry.model_dir(registry.get(model)), registry.get(model).architecture_type, 0.0)
    theirs = peft.PeftModel.from_pretrained(base.model, str(result.checkpoint)).eval()
    ours = load_lora(result.checkpoint, registry, 0.0, trainable=False)
    ours.model.eval()
    ids = ours.tokenizer.encode("The value of")[None, :]
    with torch.no_grad():
        expected = ours.logits(ids)
        got = theirs(input_ids=ids).logits if model == "tiny-qwen" else theirs(ids)[0]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("model", MODELS)
def test_resume_of_a_lora_run_is_bit_identical(tmp_path, corpus_file, registry, model):
    straight = train(lora_config(corpus_file, registry, model), tmp_path / "straight").run_dir
    parted_config = lora_config(corpus_file, registry, model, max_steps=3, lr_decay_steps=6)
    parted = train(parted_config, tmp_path / "parted").run_dir
    config, plan = plan_run([ConfigLayer("test", {"resume": str(parted), "max_steps": 6})])
    train(config, parted, resume=plan)
    assert step_losses(straight) == step_losses(parted) and len(step_losses(parted)) == 6
    final = "checkpoints/step-00000006/adapter_model.safetensors"
    assert (straight / final).read_bytes() == (parted / final).read_bytes()
    for name in ("optimizer.pt",):
        assert (straight / "checkpoints/step-00000006" / name).read_bytes() == (
            parted / "checkpoints/step-00000006" / name
        ).read_bytes()


def test_a_registered_adapter_trains_on_or_carries_a_new_adapter(tmp_path, corpus_file, registry):
    first = train(lora_config(corpus_file, registry), tmp_path / "first")
    entry = register_checkpoint(registry, first.checkpoint, "tiny-lora")
    assert (entry.adapter_base, entry.fine_tuned_from) == ("tiny-qwen", "tiny-qwen")
    assert "adapter_model.safetensors" in entry.files and "model.safetensors" not in entry.files
    assert entry.disk_size_bytes < registry.get("tiny-qwen").disk_size_bytes
    assert validate_registry(registry) == []
    # lora_r null: the adapter itself trains on, with its own rank
    more = train(lora_config(corpus_file, registry, "tiny-lora", lora_r=None, max_steps=2), tmp_path / "more")
    start = read_events(more.run_dir)[0]
    assert start["model"]["lora"]["r"] == 4 and start["lineage"]["chain"] == ["tiny-qwen", "tiny-lora"]
    # the adapter picks up where it stopped: its first loss is the loss of the trained adapter
    assert (more.checkpoint / "adapter_config.json").is_file()
    # lora_r set: a new adapter on tiny-lora merged into tiny-qwen
    stacked = train(lora_config(corpus_file, registry, "tiny-lora", lora_r=2, max_steps=2), tmp_path / "stacked")
    start = read_events(stacked.run_dir)[0]["model"]
    assert start["lora"]["r"] == 2 and start["base"]["registry_name"] == "tiny-lora"
    assert load_file(str(stacked.checkpoint / "adapter_model.safetensors"))  # adapters only, again
    merged = load_lora(first.checkpoint, registry, 0.0, trainable=False).merged().model
    on_top = load_lora(stacked.checkpoint, registry, 0.0, trainable=False).model
    weight = "model.layers.0.self_attn.q_proj"
    assert torch.equal(on_top.get_submodule(weight).base_layer.weight, merged.get_submodule(weight).weight)
    # the base cannot go while an adapter needs it
    with pytest.raises(UsageError, match="tiny-lora"):
        delete_model(registry, "tiny-qwen")


def test_an_adapter_whose_base_changed_is_refused(tmp_path, corpus_file, registry, tiny_qwen_dir):
    first = train(lora_config(corpus_file, registry, max_steps=2), tmp_path / "first")
    changed = registry.model_dir(registry.get("tiny-qwen")) / "model.safetensors"
    weights = load_file(str(changed))
    from safetensors.torch import save_file

    weights["model.norm.weight"] = weights["model.norm.weight"] + 1
    save_file(weights, str(changed))
    with registry.editing() as entries:  # as a re-import of other weights would record them
        from trainer.files import describe_files

        entries["tiny-qwen"].files = describe_files(changed.parent)
    with pytest.raises(UsageError, match="weights have changed"):
        load_lora(first.checkpoint, registry, 0.0, trainable=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lora_r": 0}, "lora_r=0 must be a positive integer"),
        ({"lora_alpha": 0.0}, "lora_alpha=0.0 must be > 0"),
        ({"lora_dropout": 1.0}, "lora_dropout=1.0 must satisfy 0 <= lora_dropout < 1"),
        ({"lora_target_modules": []}, "must name at least one module"),
        ({"model_name": None}, "needs a model to adapt"),
    ],
)
def test_bad_lora_settings_are_refused(corpus_file, registry, changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        lora_config(corpus_file, registry, **changes).validate()
    assert info.value.exit_code == 2


@pytest.mark.parametrize("model, has", [("tiny-qwen", "q_proj"), ("tiny-custom", "qkv")])
def test_target_modules_the_model_lacks_are_refused_before_the_run(tmp_path, corpus_file, registry, model, has):
    layer = ConfigLayer(
        "test", {**lora_config(corpus_file, registry, model).to_dict(), "lora_target_modules": ["c_attn"]}
    )
    with pytest.raises(ConfigError, match="lora_target_modules names c_attn") as info:
        plan_run([layer])
    assert has in info.value.hint and info.value.exit_code == 2
    layer.values["lora_target_modules"] = [has]  # a real one plans, and trains only there
    config, _ = plan_run([layer])
    result = train(config, tmp_path / "some")
    assert all(has in name for name in load_file(str(result.checkpoint / "adapter_model.safetensors")))


@pytest.mark.parametrize(
    "model, lora_r, dropout",
    [("tiny-qwen", 4, 0.0), ("tiny-qwen", None, 0.0), ("tiny-custom", 4, 0.1), ("tiny-custom", None, 0.1)],
)
def test_gradient_checkpointing_keeps_the_losses(tmp_path, corpus_file, registry, monkeypatch, model, lora_r, dropout):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    from trainer.models.transformer import FeedForward

    # Count a module inside each block: transformers wraps the decoder layer's own forward.
    block = Qwen2MLP if model == "tiny-qwen" else FeedForward
    original, calls = block.forward, []

    def forward(self, *args, **kwargs):
        calls.append(self.training)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(block, "forward", forward)
    runs, forwards = {}, {}
    for on in (False, True):
        config = lora_config(
            corpus_file, registry, model, lora_r=lora_r, dropout=dropout, gradient_checkpointing=on, max_steps=4
        )
        calls.clear()
        runs[on] = step_losses(train(config, tmp_path / f"gc-{on}").run_dir)
        forwards[on] = sum(calls)  # forwards in training mode
    assert forwards[True] == 2 * forwards[False] > 0  # each block ran again in backward
    assert runs[True].keys() == runs[False].keys() == {1, 2, 3, 4}
    for step, loss in runs[False].items():
        assert runs[True][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_bf16_keeps_the_frozen_base_in_bf16_and_the_losses_bit_for_bit(
    tmp_path, corpus_file, registry, monkeypatch, model
):
    """Under bf16 autocast a LoRA run stores its frozen linear weights in bf16 (autocast would
    cast them at every use): the same losses to the last bit, and the tied head untouched."""
    import trainer.training.parallel as parallel

    stored, real = {}, parallel.store_frozen_linears

    def spy(module, dtype):
        stored["count"] = real(module, dtype)
        stored["dtypes"] = {p.dtype for n, p in module.named_parameters() if "base_layer" in n or ".qkv." in n}
        head = module.lm_head if hasattr(module, "lm_head") else module.get_output_embeddings()
        embedding = getattr(module, "token_embedding", None) or module.get_input_embeddings()
        stored["head"] = (head.weight is embedding.weight, head.weight.dtype)
        return stored["count"]

    config = lora_config(corpus_file, registry, model, precision="bf16", max_steps=4, checkpoint_cadence=None)
    monkeypatch.setattr(parallel, "store_frozen_linears", spy)
    kept_in_bf16 = step_losses(train(config, tmp_path / "stored").run_dir)
    assert stored["count"] > 0 and torch.bfloat16 in stored["dtypes"]
    tied, head_dtype = stored["head"]  # a head tied to the embedding (looked up in fp32) stays fp32
    assert head_dtype == (torch.float32 if tied else torch.bfloat16) and (tied or model == "tiny-qwen")
    monkeypatch.setattr(parallel, "store_frozen_linears", lambda module, dtype: 0)
    cast_each_time = step_losses(train(config, tmp_path / "cast").run_dir)
    assert kept_in_bf16 == cast_each_time and len(kept_in_bf16) == 4

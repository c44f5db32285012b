"""LoRA from the command line: finetune=lora through the Hydra door, and export-model of an
adapter (merged into standalone weights, or as peft's adapter), a full fine-tune and the bad
destinations and sources export-model refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import read_events, run_dirs, run_main, serve_from_hub_cache, tiny_config
from tests.integration.conftest import train_in_process

peft = pytest.importorskip("peft")

HUB_ID = "acme/tiny-qwen"


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory):
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def lora_registry(lora_root, tiny_qwen_dir):
    """tiny-qwen imported from an offline Hub cache, so its lineage has a Hub id to name."""
    from registry.hub import import_model
    from registry.store import Registry

    registry = Registry(lora_root / "models")
    with pytest.MonkeyPatch.context() as patch:
        serve_from_hub_cache(patch, lora_root / "hub", tiny_qwen_dir, HUB_ID)
        import_model(registry, HUB_ID, name="tiny-qwen")
    return registry


def train_tiny_qwen(root: Path, registry, corpus_text: str, name: str, steps: int, **changes) -> Path:
    """The tiny Qwen trained for ``steps`` in ``root/name``: its last checkpoint."""
    corpus = root / f"{name}.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    config = tiny_config(
        corpus,
        model_name="tiny-qwen",
        registry_dir=str(registry.root),
        max_seq_len=32,
        batch_size=4,
        max_steps=steps,
        checkpoint_cadence=None,
        eval_cadence=None,
        sampling_cadence=None,
        **changes,
    )
    return train_in_process(config, root / name) / "checkpoints" / f"step-{steps:08d}"


@pytest.fixture(scope="module")
def lora_checkpoint(lora_root, lora_registry, corpus_text) -> Path:
    """A LoRA run of the tiny Qwen: 3 steps at a rate that moves the adapters well off zero."""
    return train_tiny_qwen(
        lora_root, lora_registry, corpus_text, "lora-run", 3, learning_rate=3e-2, lora_r=4, lora_alpha=8.0
    )


@pytest.fixture(scope="module")
def full_checkpoint(lora_root, lora_registry, corpus_text) -> Path:
    return train_tiny_qwen(lora_root, lora_registry, corpus_text, "full-run", 1)


IDS = torch.tensor([[5, 17, 42, 99, 7, 250, 3, 64, 128, 11]])


def adapter_logits(checkpoint: Path, registry) -> torch.Tensor:
    from trainer.models.lora import load_lora

    lora = load_lora(checkpoint, registry, dropout=0.0, trainable=False)
    lora.model.eval()
    with torch.no_grad():
        return lora.model(IDS).logits


def hf_logits(directory: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        return model(IDS).logits.float()


def export(lmrunner, registry, source, out_dir, *options):
    return lmrunner("export-model", source, out_dir, "--registry-dir", registry.root, *options)


def read_card_header(directory: Path) -> str:
    return (directory / "README.md").read_text(encoding="utf-8").split("---")[1]


def test_merged_export_matches_the_adapter_and_loads_without_lmrunner_or_peft(
    lmrunner, lora_registry, lora_checkpoint, tiny_qwen_dir, tmp_path
):
    out = tmp_path / "exports" / "merged"
    code, stdout, err = export(lmrunner, lora_registry, lora_checkpoint, out, "--merge", "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record["kind"] == "merged LoRA model" and record["dtype"] == "fp32" and record["out_dir"] == str(out)
    assert {"config.json", "model.safetensors", "README.md"} <= set(record["files"])
    assert not any(name.startswith("adapter_") or name.endswith(".pt") for name in record["files"])
    merged, adapter, base = hf_logits(out), adapter_logits(lora_checkpoint, lora_registry), hf_logits(tiny_qwen_dir)
    assert not torch.allclose(adapter, base, rtol=1e-3, atol=1e-4)  # the adapter learned something
    torch.testing.assert_close(merged, adapter, rtol=1e-4, atol=1e-5)
    header = read_card_header(out)
    assert f"base_model: {HUB_ID}" in header and "base_model_relation: merge" in header
    assert not list(out.parent.glob(".*"))  # no partial or replaced folder left beside it

    # A fresh interpreter in another directory, where lmrunner's packages cannot be imported,
    # and which must not need peft (installed here, so: not imported).
    script = f"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('trainer', 'registry'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Blocker())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
assert tokenizer('hello')['input_ids']
with torch.no_grad():
    print(model(torch.tensor({IDS.tolist()!r})).logits.float().sum().item())
assert 'peft' not in sys.modules, 'peft was imported'
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == pytest.approx(merged.sum().item(), rel=1e-5)


def test_adapter_export_without_merge_loads_with_peft_on_its_base(
    lmrunner, lora_registry, lora_checkpoint, tiny_qwen_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    code, stdout, err = export(lmrunner, lora_registry, lora_checkpoint, out)
    assert code == 0, err
    assert "note: SOURCE is a LoRA adapter: exported as an adapter" in err and "--merge" in err
    assert "exported" in stdout and "as an adapter" in stdout
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["base_model_name_or_path"] == HUB_ID
    assert "base_model_relation: adapter" in read_card_header(out)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_qwen_dir))
    model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        logits = model(IDS).logits
    torch.testing.assert_close(logits, adapter_logits(lora_checkpoint, lora_registry), rtol=1e-5, atol=1e-6)


def test_bf16_export_halves_the_weights_and_says_so_in_its_config(lmrunner, lora_registry, lora_checkpoint, tmp_path):
    sizes = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        code, stdout, err = export(lmrunner, lora_registry, lora_checkpoint, out, "--merge", "--dtype", dtype)
        assert code == 0, err
        sizes[dtype] = (out / "model.safetensors").stat().st_size
        assert json.loads((out / "config.json").read_text())["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[dtype]
    assert 0.45 < sizes["bf16"] / sizes["fp32"] < 0.55
    torch.testing.assert_close(hf_logits(tmp_path / "bf16"), hf_logits(tmp_path / "fp32"), rtol=0.1, atol=0.1)


def test_a_full_fine_tune_exports_as_a_model_and_merge_has_nothing_to_fold(
    lmrunner, lora_registry, full_checkpoint, tmp_path
):
    out = tmp_path / "full"
    code, stdout, err = export(lmrunner, lora_registry, full_checkpoint, out, "--merge")
    assert code == 0, err
    assert "has no LoRA adapter; --merge has nothing to fold in" in err
    assert "as a model" in stdout
    header = read_card_header(out)
    assert f"base_model: {HUB_ID}" in header and "base_model_relation: finetune" in header
    from safetensors.torch import load_file

    from trainer.models.loading import load_adapter

    saved = load_file(str(out / "model.safetensors"))
    trained = load_adapter(full_checkpoint, "qwen2", dropout=0.0).model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(tensor, trained[name]), name


def test_a_registered_adapter_exports_by_name(lmrunner, lora_registry, lora_checkpoint, tmp_path):
    from trainer.models.register import register_checkpoint

    if "tiny-lora" not in lora_registry.entries():
        register_checkpoint(lora_registry, lora_checkpoint, "tiny-lora")
    out = tmp_path / "by-name"
    code, stdout, err = export(lmrunner, lora_registry, "tiny-lora", out, "--merge")
    assert code == 0, err
    torch.testing.assert_close(hf_logits(out), adapter_logits(lora_checkpoint, lora_registry), rtol=1e-4, atol=1e-5)


def test_a_non_empty_destination_is_kept_unless_forced(lmrunner, lora_registry, lora_checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, stdout, err = export(lmrunner, lora_registry, lora_checkpoint, out, "--merge")
    assert code == 2 and stdout == ""
    assert f"OUT_DIR {out} is not empty" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    code, _, err = export(lmrunner, lora_registry, lora_checkpoint, out, "--merge", "--force")
    assert code == 0, err
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing left beside it


@pytest.mark.parametrize("where", ["inside the registry", "inside the checkpoint", "a file"])
def test_destinations_that_would_lose_saved_work_are_refused(lmrunner, lora_registry, lora_checkpoint, tmp_path, where):
    before = sorted(p.relative_to(lora_checkpoint) for p in lora_checkpoint.rglob("*"))
    out = {
        "inside the registry": lora_registry.root / "exported",
        "inside the checkpoint": lora_checkpoint / "exported",
        "a file": tmp_path / "file.txt",
    }[where]
    if where == "a file":
        out.write_text("keep")
    code, _, err = export(lmrunner, lora_registry, lora_checkpoint, out, "--merge", "--force")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("is not a directory" if where == "a file" else "overlaps") in err
    assert sorted(p.relative_to(lora_checkpoint) for p in lora_checkpoint.rglob("*")) == before
    assert (out.read_text() == "keep") if where == "a file" else not out.exists()


def test_the_custom_model_and_unknown_sources_are_refused(lmrunner, lora_registry, corpus_file, tmp_path):
    config = tiny_config(corpus_file, max_steps=1, sampling_cadence=None, eval_cadence=None)
    run_dir = train_in_process(config, tmp_path / "char")
    out = tmp_path / "out"
    code, _, err = export(lmrunner, lora_registry, run_dir, out)
    assert code == 2 and "character-level Transformer" in err and "no Hugging Face architecture" in err
    assert not out.exists()
    code, _, err = export(lmrunner, lora_registry, "no-such-model", out)
    assert code == 2 and "no-such-model" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_finetune_lora_through_the_hydra_door(lora_registry, corpus_file, tmp_path):
    common = [f"data_path={corpus_file}", "max_steps=2", "max_seq_len=32", "batch_size=4", "sampling_cadence=null"]
    done = run_main(
        "finetune=lora", "model_name=tiny-qwen", f"registry_dir={lora_registry.root}", "lora_r=4", *common, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path)
    start = next(e for e in read_events(run_dir) if e["event"] == "run_start")
    assert start["config"]["lora_r"] == 4 and start["config"]["lora_alpha"] == 32
    assert start["config"]["lora_target_modules"] == ["all-linear"] and start["config"]["learning_rate"] == 2e-4
    assert 0 < start["model"]["trainable_parameters"] < start["model"]["num_parameters"] / 5
    assert "of them trainable: LoRA r=4 alpha=32" in done.stderr
    checkpoint = run_dir / "checkpoints" / "step-00000002"
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "model.safetensors").exists()

    (tmp_path / "custom").mkdir()
    refused = run_main("finetune=lora", *common, cwd=tmp_path / "custom")
    assert refused.returncode == 2
    assert "needs a model to adapt" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert run_dirs(tmp_path / "custom") == []


def test_generate_and_evaluate_take_an_adapter_as_its_merged_weights(
    lmrunner, lora_registry, lora_checkpoint, corpus_text, tmp_path
):
    """An adapter as SOURCE (its checkpoint, its run directory, its registry name) is the model
    its merged export is: the same greedy text and the same loss."""
    from trainer.models.register import register_checkpoint

    if "tiny-lora" not in lora_registry.entries():
        register_checkpoint(lora_registry, lora_checkpoint, "tiny-lora")
    merged = tmp_path / "merged"
    assert export(lmrunner, lora_registry, lora_checkpoint, merged, "--merge")[0] == 0
    code, _, err = lmrunner(
        "import-model", merged, "--name", "tiny-merged", "--force", "--registry-dir", lora_registry.root
    )
    assert code == 0, err
    data = tmp_path / "held-out.txt"
    data.write_text(corpus_text[:2000], encoding="utf-8")
    registry = ("--registry-dir", lora_registry.root)

    def greedy(source) -> str:
        code, out, err = lmrunner(
            "generate", source, *registry, "--prompt", "The ", "--temperature", "0", "--max-new-tokens", "12", "--json"
        )
        assert code == 0, err
        return json.loads(out)["text"]

    def loss(source) -> float:
        code, out, err = lmrunner("evaluate", source, *registry, "--data", data, "--max-seq-len", "32", "--json")
        assert code == 0, err
        return json.loads(out)["loss"]

    run_dir = lora_checkpoint.parent.parent
    texts = {source: greedy(source) for source in (lora_checkpoint, run_dir, "tiny-lora", "tiny-merged")}
    assert len(set(texts.values())) == 1, texts
    assert loss(lora_checkpoint) == pytest.approx(loss("tiny-merged"), rel=1e-4)
    assert loss("tiny-lora") == pytest.approx(loss("tiny-merged"), rel=1e-4)
    assert loss("tiny-qwen") != pytest.approx(loss("tiny-merged"), rel=1e-4)  # the adapter changes the model

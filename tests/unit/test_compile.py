"""compile: true: the training step under torch.compile, refused where it cannot work."""

import pytest
import torch

from tests.conftest import read_events, step_losses, tiny_config
from tests.unit.test_run import resume_run, run
from trainer.config.schema import TrainingConfig
from trainer.errors import ConfigError, ConfigValueError
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.training import compiled


def test_compile_with_fsdp_is_refused_naming_both_keys():
    with pytest.raises(ConfigValueError, match=r"compile=True does not combine with strategy=fsdp") as err:
        TrainingConfig(compile=True, strategy="fsdp")
    assert err.value.key == "compile" and err.value.other_key == "strategy"


def test_compile_without_a_cpu_compiler_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler") as err:
        compiled.compile_for_training(torch.nn.Linear(2, 2), torch.device("cpu"))
    assert "compile=false" in err.value.hint


def test_a_cxx_setting_is_the_compiler_looked_for(monkeypatch, tmp_path):
    fake = tmp_path / "my-c++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert compiled._cpu_compiler() == str(fake)


@pytest.mark.slow
def test_a_compiled_run_resumes_bit_for_bit_and_saves_what_an_eager_run_loads(tmp_path, corpus_file):
    straight = tmp_path / "straight"
    run(tiny_config(corpus_file, compile=True), straight)
    parted = tmp_path / "parted"
    run(tiny_config(corpus_file, compile=True, max_steps=5, lr_decay_steps=12), parted)
    resume_run(parted, max_steps=12)

    assert step_losses(straight) == step_losses(parted)  # exact float equality, dropout on
    start = next(e for e in read_events(straight) if e["event"] == "run_start")
    assert start["precision"]["matmul"].endswith(", torch.compile")
    final = "checkpoints/step-00000012"
    assert (straight / final / "model.safetensors").read_bytes() == (parted / final / "model.safetensors").read_bytes()
    # The model's own names, no compile prefix: an eager model loads it.
    loaded = CustomTransformerAdapter.load(straight / final, dropout=0.0)
    assert loaded.model(torch.zeros(1, 4, dtype=torch.long))[0].isfinite().all()


@pytest.mark.slow
def test_without_dropout_a_compiled_run_computes_the_eager_losses(tmp_path, corpus_file):
    eager = run(tiny_config(corpus_file, dropout=0.0, max_steps=6), tmp_path / "eager")
    compiled_run = run(tiny_config(corpus_file, dropout=0.0, max_steps=6, compile=True), tmp_path / "compiled")
    assert step_losses(eager.run_dir) == pytest.approx(step_losses(compiled_run.run_dir), rel=1e-5)


@pytest.mark.slow
def test_a_compiled_fine_tune_of_a_hugging_face_model_resumes_bit_for_bit(tmp_path, corpus_file, tiny_qwen_dir):
    from registry.hub import import_model
    from registry.store import Registry

    registry = Registry(tmp_path / "models")
    import_model(registry, str(tiny_qwen_dir), name="tiny-qwen")

    def config(**changes):
        values = dict(model_name="tiny-qwen", registry_dir=str(registry.root), max_seq_len=48, batch_size=4)
        return tiny_config(corpus_file, **{**values, "max_steps": 8, "compile": True, **changes})

    eager = run(config(compile=False), tmp_path / "eager").run_dir
    straight = run(config(), tmp_path / "straight").run_dir
    parted = run(config(max_steps=4, lr_decay_steps=8), tmp_path / "parted").run_dir
    resume_run(parted, max_steps=8)

    assert step_losses(straight) == step_losses(parted)
    final = "checkpoints/step-00000008/model.safetensors"
    assert (straight / final).read_bytes() == (parted / final).read_bytes()
    # The model has no dropout of its own: compiling changes the losses by rounding only.
    assert step_losses(straight) == pytest.approx(step_losses(eager), rel=1e-4)

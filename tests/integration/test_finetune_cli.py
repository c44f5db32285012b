"""Fine-tuning an imported model end to end, as a user runs it: import, train, resume,
register the fine-tune, and the custom Transformer beside it."""

import json

import pytest

from tests.conftest import read_events, run_dirs, run_main, step_losses

transformers = pytest.importorskip("transformers")

CONFIG = """\
model_name: tiny-qwen
max_seq_len: 48
batch_size: 4
max_steps: 10
seed: 7
learning_rate: 3.0e-3
warmup_steps: 2
checkpoint_cadence: 5
eval_cadence: 5
eval_batches: 2
"""


def test_import_fine_tune_resume_register(tmp_path, tiny_qwen_dir, corpus_file):
    assert run_main("import-model", str(tiny_qwen_dir), "--name", "tiny-qwen", cwd=tmp_path).returncode == 0
    config = tmp_path / "tiny-qwen.yaml"
    config.write_text(CONFIG)
    straight = run_main("--config", str(config), "--data", str(corpus_file), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    assert "new fine-tune of tiny-qwen" in straight.stderr
    (straight_dir,) = run_dirs(tmp_path)
    checkpoint = straight_dir / "checkpoints" / "step-00000010"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint))
    assert model.config.model_type == "qwen2"
    assert len(transformers.AutoTokenizer.from_pretrained(str(checkpoint))) == 320
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["lineage"]["fine_tuned_from"] == "tiny-qwen"

    # 5 steps, then --resume to 10: the same losses as 10 straight.
    first = run_main("--config", str(config), "--data", str(corpus_file), "--max-steps", "5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (parted_dir,) = [d for d in run_dirs(tmp_path) if d != straight_dir]
    resumed = run_main("--resume", str(parted_dir), "--max-steps", "10", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing the fine-tune of tiny-qwen" in resumed.stderr
    assert step_losses(parted_dir) == step_losses(straight_dir) and len(step_losses(straight_dir)) == 10

    registered = run_main("register-model", str(checkpoint), "--name", "tiny-ft", cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr
    info = run_main("model-info", "tiny-ft", cwd=tmp_path)
    assert "fine_tuned_from: tiny-qwen" in info.stdout and "lineage: tiny-qwen -> tiny-ft" in info.stdout


def test_custom_then_qwen_in_separate_runs(tmp_path, tiny_qwen_dir, corpus_file):
    assert run_main("import-model", str(tiny_qwen_dir), "--name", "qwen-0.5b-base", cwd=tmp_path).returncode == 0
    common = ["training=fast", "max_steps=3", f"data_path={corpus_file}", "max_seq_len=32", "batch_size=4"]
    custom = run_main("model=custom", "n_layers=1", "d_model=32", "n_heads=2", "d_ff=64", *common, cwd=tmp_path)
    assert custom.returncode == 0, custom.stderr
    qwen = run_main("model=qwen-base", *common, cwd=tmp_path)  # the conf group, on a tiny stand-in
    assert qwen.returncode == 0, qwen.stderr
    custom_dir, qwen_dir = run_dirs(tmp_path)
    custom_ckpt, qwen_ckpt = (d / "checkpoints" / "step-00000003" for d in (custom_dir, qwen_dir))
    assert (custom_ckpt / "model_config.json").is_file() and not (custom_ckpt / "config.json").exists()
    assert (qwen_ckpt / "config.json").is_file() and (qwen_ckpt / "README.md").is_file()
    custom_start, qwen_start = (read_events(d)[0] for d in (custom_dir, qwen_dir))
    assert custom_start["config"]["model_name"] is None and custom_start["lineage"]["origin"] == "trained from scratch"
    assert custom_start["model"]["architecture_type"] == "custom-transformer"
    assert qwen_start["config"]["model_name"] == "qwen-0.5b-base" and qwen_start["model"]["architecture_type"] == "qwen"
    assert custom_start["tokenizer"]["identifier"].startswith("char:")


def test_unknown_model_is_one_line_and_exit_2(tmp_path, tiny_qwen_dir):
    run_main("import-model", str(tiny_qwen_dir), cwd=tmp_path)
    result = run_main("model_name=tiny-qwn", "max_steps=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "did you mean 'tiny-qwen'" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_checkpoint_that_asks_to_run_its_own_code_is_one_line_exit_2(tmp_path, tiny_qwen_dir, corpus_file):
    from tests.conftest import rehash
    from tests.unit.test_finetune import with_custom_code

    assert run_main("import-model", str(tiny_qwen_dir), "--name", "tiny-qwen", cwd=tmp_path).returncode == 0
    config = tmp_path / "tiny-qwen.yaml"
    config.write_text(CONFIG)
    trained = run_main("--config", str(config), "--data", str(corpus_file), "--max-steps", "2", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = run_dirs(tmp_path)
    saved = run_dir / "checkpoints" / "step-00000002"
    checkpoint = run_dir / "checkpoints" / "step-00000003"  # a later "checkpoint" with custom code in it
    marker = with_custom_code(saved, checkpoint, "config.json", "AutoModelForCausalLM")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "step": 3}))
    rehash(checkpoint)
    result = run_main("--resume", str(run_dir), "--max-steps", "4", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "asks to run code of its own (auto_map)" in result.stderr and "[y/N]" not in result.stderr
    assert not marker.exists()

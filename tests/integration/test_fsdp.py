"""FSDP2 on CPU: torchrun with 2 gloo ranks, the model sharded over them.

The default suite keeps one end-to-end case (the custom model: 2 FSDP ranks log the losses of
one process, and their sharded checkpoint resumes in one process); the other resumes, the tiny
Qwen (full fine-tune and LoRA), shard sizes and a killed save are ``slow``; the same run on 2
GPUs with NCCL is ``gpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import MAIN, read_events, run_dirs, run_main, serve_from_hub_cache, step_losses
from tests.integration.test_distributed import TINY, close, torchrun
from trainer.checkpoint.layout import MODEL_SHARDS, is_sharded
from trainer.checkpoint.shards import rank_files

FSDP = ["strategy=fsdp"]


@pytest.fixture
def tiny(tmp_path, corpus_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("checkpoint_cadence: null", "checkpoint_cadence: 5") + f"data_path: {corpus_file}\n")
    return config


def _new_run(cwd, before: list) -> object:
    (run,) = [d for d in run_dirs(cwd) if d not in before]
    return run


def _ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_fsdp_two_ranks_equal_one_process_and_its_sharded_checkpoint_resumes_in_one(tmp_path, tiny):
    _ok(torchrun("--config", str(tiny), *FSDP, cwd=tmp_path))
    (fsdp,) = run_dirs(tmp_path)
    assert len(list(tmp_path.rglob("events.jsonl"))) == 1  # rank 0's run directory, rank 0's events
    start = read_events(fsdp)[0]
    assert start["strategy"] == "fsdp" and start["world_size"] == 2
    checkpoint = fsdp / "checkpoints" / "step-00000005"
    assert is_sharded(checkpoint) and sorted(rank_files(checkpoint / MODEL_SHARDS)) == [0, 1]
    _ok(run_main("--config", str(tiny), cwd=tmp_path))
    one = _new_run(tmp_path, [fsdp])
    assert len(step_losses(fsdp)) == 10 and close(step_losses(fsdp), step_losses(one), 1e-5)

    # 2 -> 1: the shards gathered whole in one process, which says it is not bit for bit.
    resumed = _ok(run_main("--resume", str(checkpoint), cwd=tmp_path))
    assert "this resume cannot be bit-exact (saved by FSDP on 2 ranks, resumed on 1 process)" in resumed.stderr
    branch = _new_run(tmp_path, [fsdp, one])
    assert close(step_losses(branch), {k: v for k, v in step_losses(fsdp).items() if k > 5}, 1e-5)


@pytest.mark.slow
def test_sharded_resume_two_to_two_is_bit_identical_and_one_to_two_close(tmp_path, tiny):
    _ok(torchrun("--config", str(tiny), *FSDP, cwd=tmp_path))
    (whole,) = run_dirs(tmp_path)
    _ok(torchrun("--resume", str(whole / "checkpoints" / "step-00000005"), cwd=tmp_path))
    branch = _new_run(tmp_path, [whole])
    assert {k: v for k, v in step_losses(whole).items() if k > 5} == step_losses(branch)  # bit for bit

    # 1 -> 2: a one-process checkpoint (optimizer.pt) spread over the shards, and back.
    _ok(run_main("--config", str(tiny), "--max-steps", "5", cwd=tmp_path))
    single = _new_run(tmp_path, [whole, branch])
    up = _ok(torchrun("--resume", str(single), *FSDP, "--max-steps", "10", cwd=tmp_path))
    assert "this resume cannot be bit-exact (saved by 1 process, resumed on FSDP on 2 ranks)" in up.stderr
    assert close(step_losses(single), step_losses(whole), 1e-5)


@pytest.mark.slow
def test_ddp_checkpoint_into_fsdp_and_fsdp_into_ddp(tmp_path, tiny):
    _ok(torchrun("--config", str(tiny), "strategy=ddp", "--max-steps", "5", cwd=tmp_path))
    (ddp,) = run_dirs(tmp_path)
    _ok(torchrun("--resume", str(ddp), *FSDP, "--max-steps", "10", cwd=tmp_path))
    assert is_sharded(ddp / "checkpoints" / "step-00000010")
    _ok(torchrun("--config", str(tiny), cwd=tmp_path))  # the reference: DDP, never resumed
    reference = _new_run(tmp_path, [ddp])
    assert close(step_losses(ddp), step_losses(reference), 1e-5)

    down = _ok(torchrun("--resume", str(reference / "checkpoints" / "step-00000005"), cwd=tmp_path))
    assert "bit-exact" not in down.stderr  # DDP on 2 ranks again: exact
    _ok(
        torchrun(
            "--resume", str(ddp / "checkpoints" / "step-00000010"), "strategy=ddp", "--max-steps", "12", cwd=tmp_path
        )
    )
    _ok(torchrun("--resume", str(reference), "--max-steps", "12", cwd=tmp_path))  # DDP all the way
    assert max(step_losses(ddp)) == 12 and close(step_losses(ddp), step_losses(reference), 1e-5)


@pytest.mark.slow
def test_each_ranks_shard_file_holds_about_half(tmp_path, corpus_file):
    config = tmp_path / "wide.yaml"
    wide = TINY.replace("d_model: 32", "d_model: 128").replace("d_ff: 64", "d_ff: 512")
    config.write_text(wide + f"data_path: {corpus_file}\n")
    _ok(torchrun("--config", str(config), *FSDP, "--max-steps", "2", cwd=tmp_path))
    checkpoint = run_dirs(tmp_path)[0] / "checkpoints" / "step-00000002"
    parameters = read_events(run_dirs(tmp_path)[0])[0]["model"]["num_parameters"]
    for shards in ("model_shards", "optimizer_shards"):
        sizes = rank_files(checkpoint / shards)
        print(f"{shards}: {parameters:,} parameters ({parameters * 4:,} bytes fp32); per rank: {sizes}")
        whole = parameters * 4 * (2 if shards == "optimizer_shards" else 1)  # AdamW: two moments
        assert all(0.45 * whole <= size <= 0.6 * whole for size in sizes.values()), sizes


@pytest.fixture
def qwen_registry(tmp_path, tiny_qwen_dir):
    from registry.hub import import_model
    from registry.store import Registry

    registry = Registry(tmp_path / "models")
    with pytest.MonkeyPatch.context() as patch:
        serve_from_hub_cache(patch, tmp_path / "hub", tiny_qwen_dir, "acme/tiny-qwen")
        import_model(registry, "acme/tiny-qwen", name="tiny-qwen")
    return registry


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_tiny_qwen_on_two_fsdp_ranks_equals_one_process(tmp_path, corpus_file, qwen_registry, kind):
    """Full fine-tune and LoRA (only the adapters trainable, gradient checkpointing on)."""
    args = [
        f"data_path={corpus_file}",
        "model_name=tiny-qwen",
        f"registry_dir={qwen_registry.root}",
        "max_seq_len=32",
        "batch_size=4",
        "max_steps=4",
        "checkpoint_cadence=2",
        "eval_cadence=2",
        "eval_batches=2",
        "seed=5",
        "dropout=0.0",
    ]
    if kind == "lora":
        args += ["lora_r=4", "lora_alpha=8.0", "lora_dropout=0.0", "learning_rate=3e-2", "gradient_checkpointing=true"]
    _ok(torchrun("--config", str(_empty(tmp_path)), *args, *FSDP, cwd=tmp_path))
    (fsdp,) = run_dirs(tmp_path)
    _ok(run_main("--config", str(_empty(tmp_path)), *args, cwd=tmp_path))
    one = _new_run(tmp_path, [fsdp])
    assert close(step_losses(fsdp), step_losses(one), 1e-5), (step_losses(fsdp), step_losses(one))
    checkpoint = fsdp / "checkpoints" / "step-00000002"
    # LoRA saves the adapter as any LoRA run does (gathered: a few KB); a full fine-tune, shards.
    assert is_sharded(checkpoint) == (kind == "full")
    assert (checkpoint / "adapter_model.safetensors").is_file() == (kind == "lora")
    resumed = _ok(run_main("--resume", str(checkpoint), cwd=tmp_path))
    assert "bit-exact" in resumed.stderr
    branch = _new_run(tmp_path, [fsdp, one])
    assert close(step_losses(branch), {k: v for k, v in step_losses(fsdp).items() if k > 2}, 1e-5)
    if kind == "full":  # consolidated for the outside world: an ordinary folder transformers loads
        _check_exports(tmp_path, fsdp / "checkpoints" / "step-00000004", qwen_registry, one)


def _empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def _check_exports(tmp_path, checkpoint, registry, one):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "exported"
    _ok(run_main("export-model", str(checkpoint), str(out), "--registry-dir", str(registry.root), cwd=tmp_path))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    _ok(
        run_main(
            "register-model",
            str(checkpoint),
            "--name",
            "fsdp-tuned",
            "--registry-dir",
            str(registry.root),
            cwd=tmp_path,
        )
    )
    registered = registry.root / "fsdp-tuned"
    assert (registered / "model.safetensors").is_file() and not (registered / MODEL_SHARDS).exists()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    logits = [
        AutoModelForCausalLM.from_pretrained(str(d))(ids).logits
        for d in (out, registered, one / "checkpoints" / "step-00000004")
    ]
    assert torch.allclose(logits[0], logits[1]) and torch.allclose(logits[0], logits[2], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_rank_killed_mid_save_leaves_no_loadable_checkpoint(tmp_path, tiny):
    """Rank 1 is killed while its shards are written (SIGKILL from a wrapped writer): rank 0
    stops with one line, no step directory of that step exists, and resume uses the previous."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    # A sitecustomize that kills rank 1 inside its second shard write (step 10, after step 5's).
    (tmp_path / "sitecustomize.py").write_text(_KILLER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(MAIN)]
    result = subprocess.run(
        [*command, "--config", str(tiny), *FSDP], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode != 0
    # The surviving rank says in one line that it stopped and the last checkpoint is intact.
    assert "nothing to save (the last checkpoint, if any, is intact)" in result.stderr, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-00000005"], steps
    state = json.loads((run / "checkpoints" / "step-00000005" / "trainer_state.json").read_text())
    assert state["step"] == 5
    (tmp_path / "sitecustomize.py").unlink()
    resumed = _ok(torchrun("--resume", str(run), cwd=tmp_path))
    assert "step-00000005" in resumed.stdout + resumed.stderr
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial left


_KILLER = """
import os, signal
if os.environ.get("RANK") == "1":
    import trainer.checkpoint.shards as shards
    _save, _calls = shards.dcp_save, []
    def _dying_save(*args, **kwargs):
        _calls.append(1)
        if len(_calls) == 3:  # step 10's model shards (step 5 wrote model and optimizer: 2 calls)
            os.kill(os.getpid(), signal.SIGKILL)
        return _save(*args, **kwargs)
    shards.dcp_save = _dying_save
"""


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2 or not torch.distributed.is_nccl_available(),
    reason="needs CUDA, NCCL and 2 GPUs",
)
def test_fsdp_on_two_gpus_with_nccl_equals_one_gpu(tmp_path, tiny):
    _ok(torchrun("--config", str(tiny), *FSDP, "device=cuda", cwd=tmp_path))
    (fsdp,) = run_dirs(tmp_path)
    _ok(run_main("--config", str(tiny), "device=cuda", cwd=tmp_path))
    one = _new_run(tmp_path, [fsdp])
    assert close(step_losses(fsdp), step_losses(one), 1e-4)
    _ok(torchrun("--resume", str(fsdp / "checkpoints" / "step-00000005"), cwd=tmp_path))

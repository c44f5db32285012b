"""What a step event reports besides the loss: the gradient norm, elapsed time and tokens seen."""

import math

import pytest
import torch

from tests.conftest import read_events, tiny_config
from trainer.config.compose import ConfigLayer
from trainer.run.execute import run_training
from trainer.run.plan import plan_run
from trainer.training.optimizer import clip_gradients


def steps_of(run_dir):
    return [e for e in read_events(run_dir) if e["event"] == "step"]


def run(config, run_dir, resume=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_training(config, run_dir, resume=resume, console=False)


def parameters_with_grads(scale: float) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    for p in params:
        p.grad = torch.randn_like(p) * scale
    return params


def test_the_norm_is_measured_before_clipping_and_without_clipping_the_gradients_stay():
    params = parameters_with_grads(10.0)
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])).item()
    before = [p.grad.clone() for p in params]
    assert clip_gradients(params, None) == pytest.approx(expected, rel=1e-6)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, before, strict=True))
    assert clip_gradients(params, 1.0) == pytest.approx(expected, rel=1e-6)  # the norm before clipping
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])).item()
    assert clipped == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_step_events_carry_grad_norm_elapsed_time_and_tokens_seen(tmp_path, corpus_file, grad_clip):
    config = tiny_config(corpus_file, max_steps=4, grad_clip=grad_clip, eval_cadence=None, sampling_cadence=None)
    run(config, tmp_path / "run")
    steps = steps_of(tmp_path / "run")
    assert [e["tokens_seen"] for e in steps] == [n * 8 * 32 for n in (1, 2, 3, 4)]  # batch_size x max_seq_len
    assert all(math.isfinite(e["grad_norm"]) and e["grad_norm"] > 0 for e in steps)
    elapsed = [e["elapsed_s"] for e in steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def test_a_resumed_run_counts_on_from_its_checkpoint(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    config = tiny_config(corpus_file, max_steps=3, lr_decay_steps=6, eval_cadence=None, sampling_cadence=None)
    run(config, run_dir)
    first = steps_of(run_dir)
    resumed_config, plan = plan_run([ConfigLayer("test", {"resume": str(run_dir), "max_steps": 6})])
    run(resumed_config, run_dir, resume=plan)
    after = steps_of(run_dir)[len(first) :]
    assert [e["step"] for e in after] == [4, 5, 6]
    assert after[0]["tokens_seen"] == 4 * 8 * 32
    assert after[0]["elapsed_s"] > first[-1]["elapsed_s"]  # the checkpoint kept the clock

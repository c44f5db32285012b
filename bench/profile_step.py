"""Where a training step's CPU time goes: torch.profiler's top ops of lmrunner's training_step.

    python bench/profile_step.py [--model custom|qwen] [--precision bf16|fp32] [--layers 4] [--steps 3]

custom: the default Transformer (4 layers, d_model 256, batch 16 x 256) as a run builds it.
qwen: bench/finetune.py's Qwen2.5-0.5B-shaped model (random weights) cut to --layers layers
(the per-layer ops are the same at 24; the embedding, head and loss are full size), batch
1 x 256. Both as their runs set precision up (the fast_matmul probe included) and keep
freed memory for reuse (reuse_cpu_memory). After two
warm-up steps, profiles --steps steps and prints the ops by self CPU time, with the share of
the step that matrix multiplication takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finetune import _NoTokenizer, qwen_config, step_only_trainer  # noqa: E402  bench/ is on the path
from machine import describe_machine  # noqa: E402

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.data.prepare import open_data  # noqa: E402
from trainer.models.hf_adapter import HFCausalLMAdapter  # noqa: E402
from trainer.models.source import ModelSource  # noqa: E402
from trainer.run.build import new_adapter, new_trainer  # noqa: E402
from trainer.training.device import configure_precision  # noqa: E402
from trainer.training.host_memory import reuse_freed_memory  # noqa: E402
from trainer.training.loop import RunInfo  # noqa: E402

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm", "aten::baddbmm_")


def custom_trainer(precision: str, tmp: Path, dropout: float | None = None):
    """The default Transformer's Trainer as a run builds it (``dropout``: the config's unless
    given), and its batches."""
    config = TrainingConfig(seed=0, precision=precision, max_steps=10**6, lr_decay_steps=10**6)
    if dropout is not None:
        config = dataclasses.replace(config, dropout=dropout)
    settings = configure_precision(precision, config.fast_matmul, torch.device("cpu"))
    data = open_data(config)
    trainer = new_trainer(
        config,
        data,
        RunInfo(tmp, "profile", data.label, data.sha256),
        torch.device("cpu"),
        adapter=new_adapter(config, data, ModelSource()),
        autocast_dtype=settings.autocast_dtype,
    )
    batches = trainer.train_batches()
    return trainer, lambda: next(batches), settings


def qwen_trainer(precision: str, tmp: Path, layers: int):
    """bench/finetune.py's lmrunner contender on a Qwen2.5-0.5B-shaped model of ``layers`` layers."""
    from transformers import Qwen2ForCausalLM

    config = TrainingConfig(
        seed=0, precision=precision, batch_size=1, max_seq_len=256, weight_decay=0.0, beta2=0.999, dropout=0.0
    )
    device = torch.device("cpu")
    settings = configure_precision(precision, config.fast_matmul, device)
    torch.manual_seed(0)
    qwen = qwen_config()
    qwen.num_hidden_layers = layers
    adapter = HFCausalLMAdapter(Qwen2ForCausalLM(qwen), _NoTokenizer(), "qwen")
    trainer = step_only_trainer(adapter, config, settings, tmp)
    generator = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(0, qwen.vocab_size, (1, 257), generator=generator)
        return ids[:, :-1], ids[:, 1:]

    return trainer, batch, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("custom", "qwen"), default="custom")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--layers", type=int, default=4, help="qwen only: transformer layers kept")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(describe_machine())
    reuse_freed_memory(True)  # as a run on the CPU sets it up (reuse_cpu_memory's default)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "custom":
            trainer, next_batch, settings = custom_trainer(args.precision, Path(tmp))
        else:
            trainer, next_batch, settings = qwen_trainer(args.precision, Path(tmp), args.layers)
        for _ in range(2):
            trainer.training_step(next_batch())
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                trainer.training_step(next_batch())
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS or "mkldnn" in e.key)
    print(
        f"{args.model} {args.precision} ({settings.matmul}), {args.steps} steps profiled: "
        f"{total / 1e6 / args.steps:.3f} s of self CPU time a step, matmul {matmul / total:.0%}"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()

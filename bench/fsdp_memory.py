"""Memory per rank of DDP and FSDP: 2 CPU ranks (gloo), the custom Transformer at a few hundred MB.

    python bench/fsdp_memory.py [--layers 8] [--d-model 1024] [--steps 2]

Launches itself under torchrun twice, once per strategy. Each rank builds the model, places it
as lmrunner does (trainer/training/parallel.py: DDP's wrapper, or FSDP2 per block then the
root), makes lmrunner's AdamW and trains ``--steps`` steps on random tokens. Every rank then
prints its peak RSS (getrusage), its RSS after the steps, and the bytes of what it keeps for
training: its parameters, gradients and AdamW moments (under FSDP its shards of them).

The model is built whole on every rank before it is sharded, as a run builds it, so FSDP's
peak RSS includes one full fp32 copy of the weights at start; its steady state is the figure
that the "memory per rank" formula in README's "Scaling out" predicts.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def _rss_now() -> int:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _local_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def worker(strategy: str, layers: int, d_model: int, steps: int) -> None:
    import torch
    import torch.distributed as dist

    from trainer.config.schema import TrainingConfig
    from trainer.models.custom_adapter import CustomTransformerAdapter
    from trainer.models.transformer import TransformerShape
    from trainer.training.optimizer import create_optimizer
    from trainer.training.parallel import place_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    shape = TransformerShape(
        vocab_size=256, n_layers=layers, d_model=d_model, n_heads=16, d_ff=4 * d_model, max_seq_len=128, dropout=0.0
    )
    config = TrainingConfig(strategy=strategy, seed=0)
    adapter = CustomTransformerAdapter.new(shape, tokenizer=None)
    parameters = adapter.model.num_parameters()
    device = torch.device("cpu")
    place_model(adapter, strategy, device, config, None)
    optimizer = create_optimizer(adapter, config, device)
    for _ in range(steps):
        inputs = torch.randint(0, 256, (2, 128))
        loss = adapter.loss_sum(inputs, torch.roll(inputs, -1, dims=1)) / inputs.numel()
        loss.backward()
        optimizer.step()
        # Gradients kept (not zeroed to None): a run holds them until the next backward.
    kept = {
        "params": _local_bytes(adapter.model.parameters()),
        "grads": _local_bytes(p.grad for p in adapter.model.parameters() if p.grad is not None),
        "adamw": _local_bytes(v for s in optimizer.state.values() for v in s.values() if v.dim() > 0),
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    row = (
        f"| {strategy.upper():4} | {rank} | {parameters / 1e6:.1f}M | {peak / MB:,.0f} | {_rss_now() / MB:,.0f} "
        f"| {kept['params'] / MB:,.0f} | {kept['grads'] / MB:,.0f} | {kept['adamw'] / MB:,.0f} "
        f"| {sum(kept.values()) / MB:,.0f} |"
    )
    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, row)
    if rank == 0:
        print("\n".join(rows), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.layers, args.d_model, args.steps)
        return
    print(f"{os.cpu_count()} CPU cores, torch gloo, 2 ranks; MB = 2^20 bytes; fp32")
    print("| strategy | rank | parameters | peak RSS MB | RSS after MB | params MB | grads MB | AdamW MB | kept MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    for strategy in ("ddp", "fsdp"):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__]
        options = ["--worker", strategy, "--layers", str(args.layers), "--d-model", str(args.d_model)]
        subprocess.run([*command, *options, "--steps", str(args.steps)], check=True, env=env, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()

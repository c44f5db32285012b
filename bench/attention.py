"""One layer's causal attention, forward + backward, by each route the CPU training step could take.

    python bench/attention.py [--rounds 5] [--reps 10] [--batch 16] [--heads 4] [--seq 256] [--head-dim 64] [--steps N]

The shape defaults to the default model's (batch 16, 4 heads, 256 positions, head_dim 64).
In bf16 and fp32, taking turns within each round:
  - SDPA without dropout (torch's fused kernel, forward and backward);
  - attention_with_blocked_backward: SDPA's forward, a blocked backward
    (trainer/models/cpu_attention.py);
  - SDPA with dropout 0.1 (torch's unfused fallback: the CPU has no fused kernel with dropout);
  - attention_with_dropout, p 0.1: the blocked forward and backward.
Each line gives the fastest and the median time of one forward + backward, in ms. These
times decide the routes of cpu_attention.training_attention.

--steps N adds whole training steps of the default model in bf16 without dropout (as a run
builds it), N a round with each backward, taking turns: what the blocked backward saves a step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe_machine, load_average  # noqa: E402  bench/ is on the path
from profile_step import custom_trainer  # noqa: E402

from trainer.models import cpu_attention  # noqa: E402
from trainer.training.host_memory import reuse_freed_memory  # noqa: E402

ROUTES = {
    "SDPA, no dropout": cpu_attention.fused_attention,
    "fused forward, blocked backward": cpu_attention.attention_with_blocked_backward,
    "SDPA, dropout 0.1": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.1),
    "blocked, dropout 0.1": lambda q, k, v: cpu_attention.attention_with_dropout(q, k, v, 0.1),
}


def time_route(route, shape: tuple[int, ...], dtype: torch.dtype, reps: int) -> list[float]:
    """Seconds of each of ``reps`` forward + backward passes, on (batch, heads, seq, head_dim)
    views laid out as the model's (transposed from (batch, seq, heads, head_dim))."""
    batch, heads, seq, head_dim = shape
    q, k, v = (torch.randn(batch, seq, heads, head_dim, dtype=dtype).transpose(1, 2).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, dtype=dtype)
    times = []
    for _ in range(reps + 1):  # the first is a warm-up
        started = time.perf_counter()
        route(q, k, v).backward(grad)
        times.append(time.perf_counter() - started)
        q.grad = k.grad = v.grad = None
    return times[1:]


def time_steps(rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds of the default model's bf16 training steps without dropout, with the blocked
    backward and with SDPA's own, ``steps`` of each a round."""
    blocked = cpu_attention.attention_with_blocked_backward
    times = {"SDPA's backward": [], "blocked backward": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainer, next_batch, _ = custom_trainer("bf16", Path(tmp), dropout=0.0)
        for _ in range(2):  # warm-up
            trainer.training_step(next_batch())
        try:
            for _ in range(rounds):
                for name, route in (("SDPA's backward", cpu_attention.fused_attention), ("blocked backward", blocked)):
                    # The route training_attention takes for bf16 without dropout, swapped in.
                    cpu_attention.attention_with_blocked_backward = route
                    for _ in range(steps):
                        started = time.perf_counter()
                        trainer.training_step(next_batch())
                        times[name].append(time.perf_counter() - started)
        finally:
            cpu_attention.attention_with_blocked_backward = blocked
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=10, help="passes per route and round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=0, help="also whole bf16 training steps, N a round per backward")
    args = parser.parse_args()
    if min(args.rounds, args.reps, args.batch, args.heads, args.seq, args.head_dim) < 1 or args.steps < 0:
        parser.error("--steps must be >= 0, every other option >= 1")
    shape = (args.batch, args.heads, args.seq, args.head_dim)
    print(describe_machine())
    print(f"one layer's attention, forward + backward, shape {shape}; {args.rounds} rounds x {args.reps} passes")
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        times = {name: [] for name in ROUTES}
        for _ in range(args.rounds):
            for name, route in ROUTES.items():
                times[name] += time_route(route, shape, dtype, args.reps)
        for name, spent in times.items():
            print(
                f"  {str(dtype).removeprefix('torch.'):<9} {name:<32} "
                f"fastest {min(spent) * 1e3:6.1f} ms  median {statistics.median(spent) * 1e3:6.1f} ms"
            )
    if args.steps:
        print(f"default model, bf16, dropout 0, batch 16 x 256: {args.rounds} rounds x {args.steps} steps per backward")
        reuse_freed_memory(True)  # as a run on the CPU sets it up
        for name, spent in time_steps(args.rounds, args.steps).items():
            print(f"  {name:<42} fastest {min(spent) * 1e3:6.1f} ms  median {statistics.median(spent) * 1e3:6.1f} ms")
    print(load_average())


if __name__ == "__main__":
    main()

"""Tokens/s of the custom Transformer's generate, with its KV cache and without, in one run.

    python bench/generate.py [--rounds 5] [--new-tokens 256] [--max-seq-len 512]

The default architecture (4 layers, d_model 256, 4 heads, d_ff 1024) with random weights
and a 96-character vocabulary, except that it has 512 positions, so that 256 new tokens after
the prompt fit (with the default 256 the window would slide and both paths recompute). Each
round times both paths from the same seed, taking turns (the order swaps every round, so
neither always runs on a warmer machine), and checks they drew the same tokens. Prints the
min and median tokens/s of each over the rounds, and the speedup of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.models.transformer import Transformer, TransformerShape  # noqa: E402


def timed_generate(model: Transformer, prompt: torch.Tensor, new_tokens: int, use_cache: bool):
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    out = model.generate(prompt, new_tokens, 1.0, generator, use_cache=use_cache)
    return new_tokens / (time.perf_counter() - started), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--max-seq-len", type=int, default=512)
    args = parser.parse_args()
    shape = TransformerShape(
        vocab_size=96, n_layers=4, d_model=256, n_heads=4, d_ff=1024, max_seq_len=args.max_seq_len, dropout=0.0
    )
    torch.manual_seed(0)
    model = Transformer(shape).eval()
    prompt = torch.tensor([5, 17, 33, 2])
    if len(prompt) + args.new_tokens > shape.max_seq_len:
        parser.error("--new-tokens must fit in --max-seq-len with the 4-token prompt")
    timed_generate(model, prompt, 16, True)  # warm-up: first calls pay for allocations
    timed_generate(model, prompt, 16, False)
    rates: dict[str, list[float]] = {"cached": [], "uncached": []}
    for round_number in range(args.rounds):
        order = ["cached", "uncached"] if round_number % 2 == 0 else ["uncached", "cached"]
        outputs = {}
        for name in order:
            rate, outputs[name] = timed_generate(model, prompt, args.new_tokens, use_cache=name == "cached")
            rates[name].append(rate)
        if not torch.equal(outputs["cached"], outputs["uncached"]):
            sys.exit("the cached and uncached paths drew different tokens")
    print(
        f"{args.new_tokens} new tokens, {model.num_parameters() / 1e6:.1f}M parameters, {args.rounds} rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; the same tokens every round"
    )
    print(f"  {'generate':<10} {'min tok/s':>10} {'median tok/s':>13}")
    for name, values in rates.items():
        print(f"  {name:<10} {min(values):>10.1f} {statistics.median(values):>13.1f}")
    speedup = statistics.median(rates["cached"]) / statistics.median(rates["uncached"])
    print(f"  the cache is {speedup:.1f}x faster (medians)")


if __name__ == "__main__":
    main()

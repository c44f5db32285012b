"""Training throughput of the default architecture, side by side in one process.

    python bench/throughput.py [--steps 20] [--rounds 3] [--compile] [--dropout P]

Measures, in this order and in this process:
  1. matmul peaks (GFLOP/s) at the model's shapes: fp32 through the default BLAS, fp32
     through oneDNN (float32_matmul_precision "medium", with its error against float64, since
     on CPUs with AMX or AVX512-BF16 it quietly computes in bf16), and bf16;
  2. tokens/s of a nanoGPT-style eager fp32 loop (torch's own dropout and SDPA, plain AdamW)
     at the default size: 4 layers, d_model 256, 4 heads, d_ff 1024, seq 256, batch 16;
  3. tokens/s of lmrunner's Trainer.training_step at the same size, with precision fp32 (as a
     run would set it up, fast_matmul probe included) and with precision bf16.
With --compile, lmrunner's loops run a second time with ``compile: true`` (torch.compile),
each compiled in its first warm-up step (the compile time is printed); --dropout sets the
dropout of every loop (default: the config's 0.1), to see what compiling does without it.
The loops and the matmul peaks take turns (rounds), so background noise hits all of them
alike; each loop reports its median and fastest step. MFU is model FLOPs per second at the
median step over the best matching peak of the rounds; where that would exceed 100% (the peak
was measured under load) it says so instead of printing the figure. PASS/MISS against the
project's speed targets (fp32 >= 1.4x, bf16 >= 4x the nanoGPT-style loop).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe_machine, load_average, min_median, verdict  # noqa: E402  bench/ is on the path

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.data.prepare import open_data  # noqa: E402
from trainer.models.source import ModelSource  # noqa: E402
from trainer.run.build import new_adapter, new_trainer  # noqa: E402
from trainer.training.device import configure_precision  # noqa: E402
from trainer.training.host_memory import reuse_freed_memory  # noqa: E402
from trainer.training.loop import RunInfo  # noqa: E402


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, precision: str, reps: int = 30) -> float:
    torch.set_float32_matmul_precision(precision)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    seconds = time.perf_counter() - started
    torch.set_float32_matmul_precision("highest")
    return 2 * m * k * n * reps / seconds / 1e9


def medium_precision_error() -> float:
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    reference = a.double() @ b.double()
    torch.set_float32_matmul_precision("medium")
    result = (a @ b).double()
    torch.set_float32_matmul_precision("highest")
    return ((result - reference).abs().max() / reference.abs().max()).item()


class ReferenceGPT(nn.Module):
    """A nanoGPT-style baseline: torch's dropout and SDPA dropout, nothing tuned."""

    def __init__(self, vocab: int, layers: int, d: int, heads: int, d_ff: int, seq: int, p: float):
        super().__init__()
        self.heads, self.p = heads, p
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.drop = nn.Dropout(p)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "ln1": nn.LayerNorm(d),
                    "qkv": nn.Linear(d, 3 * d),
                    "proj": nn.Linear(d, d),
                    "ln2": nn.LayerNorm(d),
                    "up": nn.Linear(d, d_ff),
                    "down": nn.Linear(d_ff, d),
                }
            )
            for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        h = self.drop(self.tok(x) + self.pos(torch.arange(t)))
        for layer in self.layers:
            q, k, v = layer["qkv"](layer["ln1"](h)).split(h.shape[-1], dim=2)
            q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p)
            h = h + self.drop(layer["proj"](a.transpose(1, 2).reshape(b, t, -1)))
            h = h + self.drop(layer["down"](F.gelu(layer["up"](layer["ln2"](h)))))
        logits = self.head(self.ln_f(h))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))


def flops_per_token(model: nn.Module, cfg: TrainingConfig) -> float:
    """6 N (forward + backward of the weights) + 12 L T d (attention scores and values)."""
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embedding" not in n)
    return 6 * non_embedding + 12 * cfg.n_layers * cfg.max_seq_len * cfg.d_model


# The speed targets: tokens/s against the nanoGPT-style fp32 loop, medians of one invocation.
TARGETS = {"fp32": 1.4, "bf16": 4.0}
PEAK_SETTINGS = {
    "fp32 default BLAS": (torch.float32, "highest"),
    "fp32 oneDNN (medium)": (torch.float32, "medium"),
    "bf16": (torch.bfloat16, "highest"),
}


def build_loops(cfg: TrainingConfig, run: RunInfo, data, compile_too: bool) -> dict:
    """name -> (one training step, the fp32 matmul setting it runs under, its model, precision)."""
    loops = {}
    variants = [(p, c) for c in ((False, True) if compile_too else (False,)) for p in ("fp32", "bf16")]
    for precision, compiled in variants:
        settings = configure_precision(precision, cfg.fast_matmul, torch.device("cpu"))
        config = TrainingConfig(**{**cfg.to_dict(), "precision": precision, "compile": compiled})
        trainer = new_trainer(
            config,
            data,
            run,
            torch.device("cpu"),
            adapter=new_adapter(config, data, ModelSource()),
            autocast_dtype=settings.autocast_dtype,
        )
        batches = trainer.train_batches()
        matmul_setting = "medium" if "fast kernels, probe" in settings.matmul else "highest"
        loops[f"lmrunner {precision}{' compiled' if compiled else ''} ({settings.matmul})"] = (
            lambda t=trainer, b=batches: t.training_step(next(b)),
            matmul_setting,
            trainer.model,
            precision,
        )
    reference = ReferenceGPT(
        trainer.tokenizer.vocab_size, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.max_seq_len, cfg.dropout
    )
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=cfg.learning_rate)
    ref_batches = trainer.train_batches()

    def reference_step():
        x, y = next(ref_batches)
        loss = reference(x, y)
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

    return {BASELINE: (reference_step, "highest", reference, "fp32"), **loops}


BASELINE = "nanoGPT-style eager fp32"


def mfu_text(rate: float, flops: float, peak_gflops: float) -> str:
    """Model FLOPs utilisation, or why there is none: a figure above 100% is impossible, and
    means the peak was measured while something else held the cores."""
    mfu = rate * flops / (peak_gflops * 1e9)
    return f"MFU {mfu:5.1%}" if mfu <= 1.0 else "MFU n/a (peak measured too low under load)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also lmrunner's loops with compile: true")
    parser.add_argument("--dropout", type=float, default=TrainingConfig.dropout, help="dropout of every loop")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = TrainingConfig(seed=0, max_steps=10**6, lr_decay_steps=10**6, dropout=args.dropout)
    tokens = cfg.batch_size * cfg.max_seq_len
    print(describe_machine())
    # As a run on the CPU sets it up (reuse_cpu_memory); process-wide, so the baseline has it too.
    reuse_freed_memory(cfg.reuse_cpu_memory)
    shape = (cfg.batch_size * cfg.max_seq_len, cfg.d_model, cfg.d_ff)
    error = medium_precision_error()
    verdict_text = "fp32-accurate" if error < 1e-4 else "NOT fp32-accurate: reduced precision on this CPU"
    print(f"oneDNN 'medium' fp32 matmul error vs float64: {error:.1e} ({verdict_text})")

    peaks = {name: [] for name in PEAK_SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        data = open_data(cfg)
        loops = build_loops(cfg, RunInfo(Path(tmp), "bench", data.label, data.sha256), data, args.compile)
        times = {name: [] for name in loops}
        first_step = {}
        for _ in range(args.rounds):
            # The peaks take their turn too: measured once, they can land in a quiet moment
            # or a busy one, and an MFU against a peak taken under load reads above 100%.
            for name, (dtype, setting) in PEAK_SETTINGS.items():
                peaks[name].append(matmul_gflops(*shape, dtype, setting))
            for name, (step, matmul_setting, _, _) in loops.items():
                torch.set_float32_matmul_precision(matmul_setting)
                started = time.perf_counter()
                for _ in range(2):  # warm-up: allocator and kernel caches (and compiling)
                    step()
                first_step.setdefault(name, time.perf_counter() - started)
                for _ in range(args.steps):
                    started = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - started)
        torch.set_float32_matmul_precision("highest")

    print(f"\nmatmul peaks ({shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]}), best and median of {args.rounds} rounds:")
    for name, values in peaks.items():
        print(f"  {name:>22}: {max(values):7.0f} GFLOP/s best, {statistics.median(values):7.0f} median")
    best_peak = {name: max(values) for name, values in peaks.items()}

    print(
        f"\ntraining throughput, default architecture, batch {cfg.batch_size} x seq {cfg.max_seq_len}, "
        f"{args.rounds} rounds x {args.steps} steps, loops taking turns; tokens/s of the median and the fastest step:"
    )
    baseline = tokens / statistics.median(times[BASELINE])
    rates = {}
    for name, (_, matmul_setting, model, precision) in loops.items():
        fastest, median = min_median(times[name])
        rates[name] = tokens / median
        peak = best_peak[
            "bf16"
            if precision == "bf16"
            else "fp32 oneDNN (medium)"
            if matmul_setting == "medium"
            else "fp32 default BLAS"
        ]
        print(
            f"  {name:<52} median {rates[name]:8,.0f}  fastest {tokens / fastest:8,.0f} tokens/s  "
            f"{rates[name] / baseline:5.2f}x baseline  {mfu_text(rates[name], flops_per_token(model, cfg), peak)}"
        )
    for name, seconds in first_step.items():
        if "compiled" in name:
            print(f"  {name}: first two steps (compiling included) {seconds:.1f} s")
    print(f"\nmodel FLOPs per token: {flops_per_token(loops[BASELINE][2], cfg) / 1e6:.1f} M (6 N + 12 L T d)")
    print("targets (median tokens/s against the nanoGPT-style fp32 loop):")
    for name, (_, _, _, precision) in loops.items():
        if name != BASELINE:
            ratio = rates[name] / baseline
            print(f"  {name:<52} >= {TARGETS[precision]:.1f}x: {ratio:5.2f}x  {verdict(ratio >= TARGETS[precision])}")
    print(load_average())


if __name__ == "__main__":
    main()

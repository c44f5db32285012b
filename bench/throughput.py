"""Training throughput of the default architecture, side by side in one process.

    python bench/throughput.py [--steps 20] [--rounds 3]

Measures, in this order and in this process:
  1. matmul peaks (GFLOP/s) at the model's shapes: fp32 through the default BLAS, fp32
     through oneDNN (float32_matmul_precision "medium", with its error against float64, since
     on CPUs with AMX or AVX512-BF16 it quietly computes in bf16), and bf16;
  2. tokens/s of a nanoGPT-style eager fp32 loop (torch's own dropout and SDPA, plain AdamW)
     at the default size: 4 layers, d_model 256, 4 heads, d_ff 1024, seq 256, batch 16;
  3. tokens/s of lmrunner's Trainer.training_step at the same size, with precision fp32 (as a
     run would set it up, fast_matmul probe included) and with precision bf16.
The loops take turns (rounds), so background noise hits all of them alike, and each figure
is the median step time. MFU is model FLOPs per second over the matching measured peak.
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

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.data.prepare import open_data  # noqa: E402
from trainer.models.source import ModelSource  # noqa: E402
from trainer.run.build import new_adapter, new_trainer  # noqa: E402
from trainer.training.device import configure_precision  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per loop and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = TrainingConfig(seed=0, max_steps=10**6, lr_decay_steps=10**6)
    tokens = cfg.batch_size * cfg.max_seq_len

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    shape = (cfg.batch_size * cfg.max_seq_len, cfg.d_model, cfg.d_ff)
    peaks = {
        "fp32 default BLAS": matmul_gflops(*shape, torch.float32, "highest"),
        "fp32 oneDNN (medium)": matmul_gflops(*shape, torch.float32, "medium"),
        "bf16": matmul_gflops(*shape, torch.bfloat16, "highest"),
    }
    for name, gflops in peaks.items():
        print(f"matmul peak {name:>22}: {gflops:7.0f} GFLOP/s  ({shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]})")
    error = medium_precision_error()
    verdict = "fp32-accurate" if error < 1e-4 else "NOT fp32-accurate: reduced precision on this CPU"
    print(f"oneDNN 'medium' fp32 matmul error vs float64: {error:.1e} ({verdict})")

    with tempfile.TemporaryDirectory() as tmp:
        data = open_data(cfg)
        run = RunInfo(Path(tmp), "bench", data.label, data.sha256)
        loops = {}
        for precision in ("fp32", "bf16"):
            settings = configure_precision(precision, cfg.fast_matmul, torch.device("cpu"))
            config = TrainingConfig(**{**cfg.to_dict(), "precision": precision})
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
            loops[f"lmrunner {precision} ({settings.matmul})"] = (
                lambda t=trainer, b=batches: t.training_step(next(b)),
                matmul_setting,
                trainer.model,
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

        loops = {"nanoGPT-style eager fp32": (reference_step, "highest", reference), **loops}
        times = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, (step, matmul_setting, _) in loops.items():
                torch.set_float32_matmul_precision(matmul_setting)
                for _ in range(2):  # warm-up: allocator and kernel caches
                    step()
                for _ in range(args.steps):
                    started = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - started)

    baseline = tokens / statistics.median(times["nanoGPT-style eager fp32"])
    print(
        f"\ntraining throughput, default architecture, batch {cfg.batch_size} x seq {cfg.max_seq_len}, "
        f"{args.rounds} rounds x {args.steps} steps, median step:"
    )
    for name, (_, matmul_setting, model) in loops.items():
        rate = tokens / statistics.median(times[name])
        peak = (
            peaks["bf16"]
            if "bf16" in name
            else peaks["fp32 oneDNN (medium)" if matmul_setting == "medium" else "fp32 default BLAS"]
        )
        mfu = rate * flops_per_token(model, cfg) / (peak * 1e9)
        print(f"  {name:<52} {rate:8,.0f} tokens/s  {rate / baseline:5.2f}x baseline  MFU {mfu:5.1%}")
    print(f"\nmodel FLOPs per token: {flops_per_token(reference, cfg) / 1e6:.1f} M (6 N + 12 L T d)")


if __name__ == "__main__":
    main()

"""Fine-tuning step time and peak memory: lmrunner's Trainer beside transformers.Trainer.

    python bench/finetune.py [--steps 3] [--warmup 1] [--seq-len 256]

Builds a model of Qwen2.5-0.5B's published shape (24 layers, hidden 896, 14 heads with 2 KV
heads, vocabulary 151,936, tied embeddings) with random weights, saves it once, then runs,
one after the other in this one invocation, each in a fresh subprocess of this script:
  1. transformers.Trainer, fp32, its defaults (fused AdamW, max_grad_norm 1.0), fed
     {"input_ids", "labels"} so the model shifts the labels itself;
  2. lmrunner's Trainer.training_step with precision fp32 (exact default kernels, as
     configure_precision leaves them on CPUs where the fast path is not fp32-accurate);
  3. the same with precision bf16 (autocast over fp32 master weights).
Every contender starts from the same saved weights and sees the same random token windows
(batch 1 x seq-len), so the first-step losses must agree: fp32 to ~1e-5 relative. Each
measures its median step time after the warm-up steps and its peak RSS; the table compares
them with the Trainer against the targets (lmrunner fp32 <= 0.6x the Trainer's step time,
bf16 <= 0.45x, peak memory <= the Trainer's). A subprocess per contender because a process's
peak RSS only ever grows: in one process every contender after the first would inherit it.

About 5 minutes on a 2-core CPU with the defaults; needs about 12 GB of memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.adapters import HFCausalLMAdapter  # noqa: E402
from trainer.config import TrainingConfig  # noqa: E402
from trainer.device import configure_precision  # noqa: E402
from trainer.loop import RunInfo, Trainer  # noqa: E402
from trainer.optim import create_optimizer  # noqa: E402

CONTENDERS = {
    "trainer": "transformers.Trainer fp32",
    "fp32": "lmrunner fp32",
    "bf16": "lmrunner bf16 autocast",
}
# Step-time ratio to the Trainer that each lmrunner precision must reach.
TIME_TARGETS = {"fp32": 0.6, "bf16": 0.45}
RESULT_PREFIX = "RESULT "
# The same optimisation on both sides, so the losses after step 1 stay comparable too:
# transformers' defaults (AdamW betas 0.9/0.999, no weight decay, clip 1.0) at a constant rate.
LEARNING_RATE = 5e-5


def qwen_config():
    """Qwen2.5-0.5B's published config.json, in transformers 5 keyword names."""
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
    )


def build_model(directory: Path) -> int:
    """Random weights of the published shape, saved in fp32; returns the parameter count."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen_config())
    model.save_pretrained(str(directory))
    return sum(p.numel() for p in model.parameters())


def windows(count: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """``count`` windows of seq_len + 1 random ids: inputs and shifted targets, as lmrunner cuts them."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocab_size, (count, 1, seq_len + 1), generator=generator)


def rss_now_gb() -> float:
    """Current resident memory (Linux /proc), to tell the loaded model from training's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


# --- the contenders, one per subprocess --------------------------------------------------


def run_hf_trainer(model_dir: Path, batches: torch.Tensor, output_dir: Path) -> tuple[list[float], list[float], float]:
    from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments
    from transformers import Trainer as HFTrainer

    class StepTimer(TrainerCallback):
        # on_step_begin is after the batch is fetched, on_step_end after the optimizer step
        # and zero_grad: the same span as lmrunner's training_step.
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.started)

    losses: list[torch.Tensor] = []

    class LossRecordingTrainer(HFTrainer):
        # With logging off the Trainer keeps no per-step loss; keeping the detached one costs nothing.
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            losses.append(loss.detach().clone())
            return loss

    class Windows(torch.utils.data.IterableDataset):
        # Iterable: the Trainer keeps its order (a map-style dataset would be shuffled), so
        # step k sees the same window as lmrunner's step k. The model shifts labels by one
        # itself, so it gets the whole seq_len + 1 window: its seq_len predictions are exactly
        # lmrunner's (causal attention: the extra last position changes no earlier logit).
        def __iter__(self):
            for ids in batches:
                yield {"input_ids": ids[0], "labels": ids[0]}

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    loaded = rss_now_gb()
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        max_steps=len(batches),
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=0,
    )
    timer = StepTimer()
    hf_trainer = LossRecordingTrainer(model=model, args=args, train_dataset=Windows(), callbacks=[timer])
    hf_trainer.train()
    return timer.times, [loss.item() for loss in losses], loaded


class _NoTokenizer:
    """Training from token ids needs no tokenizer; the adapter only keeps a reference."""

    eos_id = None


def run_lmrunner(
    model_dir: Path, batches: torch.Tensor, precision: str, output_dir: Path
) -> tuple[list[float], list[float], float]:
    device = torch.device("cpu")
    config = TrainingConfig(
        seed=0,
        precision=precision,
        batch_size=1,
        max_seq_len=batches.shape[-1] - 1,
        max_steps=len(batches),
        learning_rate=LEARNING_RATE,
        lr_schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        beta2=0.999,
        dropout=0.0,
    )
    # As a run sets it up: exact fp32 matmuls unless the probe shows the fast path is accurate.
    settings = configure_precision(precision, config.fast_matmul, device)
    # The shipped loader: fp32 master weights whatever the saved dtype.
    adapter = HFCausalLMAdapter.load(model_dir, "qwen", tokenizer=_NoTokenizer())
    loaded = rss_now_gb()
    # Trainer.training_step needs neither a corpus nor validation batches; the rest of the
    # Trainer (run directory, hooks) is never reached by it.
    trainer = Trainer(
        adapter,
        create_optimizer(adapter, config, device),
        config,
        val_dataloader=[],
        train_dataset=None,
        run=RunInfo(output_dir, "bench-finetune", "random token ids", ""),
        device=device,
        autocast_dtype=settings.autocast_dtype,
    )
    times, losses = [], []
    for ids in batches:
        started = time.perf_counter()
        losses.append(trainer.training_step((ids[:, :-1], ids[:, 1:])))
        times.append(time.perf_counter() - started)
    return times, losses, loaded


def run_one(name: str, model_dir: Path, warmup: int, steps: int, seq_len: int) -> None:
    """Child: one contender; prints one JSON line for the parent."""
    batches = windows(warmup + steps, seq_len, qwen_config().vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "trainer":
            times, losses, loaded = run_hf_trainer(model_dir, batches, Path(tmp))
        else:
            times, losses, loaded = run_lmrunner(model_dir, batches, name, Path(tmp))
    result = {
        "name": name,
        "step_s": times[warmup:],
        "warmup_s": times[:warmup],
        "losses": losses,
        "loaded_gb": loaded,
        "peak_gb": peak_rss_gb(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- the parent: all contenders, one after the other --------------------------------------


def run_child(name: str, model_dir: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--only",
        name,
        "--model-dir",
        str(model_dir),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--seq-len",
        str(args.seq_len),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        sys.exit(f"{CONTENDERS[name]} failed (exit {done.returncode})")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["wall_s"] = time.perf_counter() - started
    return result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="steps before measuring (allocator, kernel caches)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (batch is 1)")
    parser.add_argument("--only", choices=list(CONTENDERS), help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.only:
        run_one(args.only, args.model_dir, args.warmup, args.steps, args.seq_len)
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        n_params = build_model(Path(tmp))
        print(
            f"Qwen2.5-0.5B shape, random weights: {n_params / 1e6:.0f}M parameters, "
            f"built and saved in {time.perf_counter() - started:.0f} s"
        )
        print(f"batch 1 x {args.seq_len} tokens, {args.warmup} warm-up + {args.steps} measured steps each\n")
        results = {}
        for name, label in CONTENDERS.items():
            results[name] = run_child(name, Path(tmp), args)
            r = results[name]
            losses = ", ".join(f"{loss:.6f}" for loss in r["losses"])
            print(f"  {label:<26} done in {r['wall_s']:4.0f} s; losses per step: {losses}")

    base = results["trainer"]
    base_time = statistics.median(base["step_s"])
    first = base["losses"][0]
    print(
        f"\n{'':<26} {'step (s)':>9} {'vs HF':>6} {'peak GB':>8} {'vs HF':>6} {'loaded GB':>9}  step-1 loss (rel. diff)"
    )
    for name, label in CONTENDERS.items():
        r = results[name]
        step = statistics.median(r["step_s"])
        rel = abs(r["losses"][0] - first) / abs(first)
        print(
            f"{label:<26} {step:9.2f} {step / base_time:5.2f}x {r['peak_gb']:8.2f} "
            f"{r['peak_gb'] / base['peak_gb']:5.2f}x {r['loaded_gb']:9.2f}  {r['losses'][0]:.6f} ({rel:.1e})"
        )

    print("\ntargets:")
    for name, target in TIME_TARGETS.items():
        r = results[name]
        ratio = statistics.median(r["step_s"]) / base_time
        print(f"  {CONTENDERS[name]:<26} step time <= {target:.2f}x Trainer: {ratio:.2f}x  {verdict(ratio <= target)}")
        ratio = r["peak_gb"] / base["peak_gb"]
        print(f"  {CONTENDERS[name]:<26} peak memory <= Trainer's:   {ratio:.2f}x  {verdict(ratio <= 1.0)}")
    rel = abs(results["fp32"]["losses"][0] - first) / abs(first)
    print(f"  fp32 step-1 loss agrees with the Trainer (rel. diff <= 1e-5): {rel:.1e}  {verdict(rel <= 1e-5)}")


if __name__ == "__main__":
    main()

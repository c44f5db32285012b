"""Fine-tuning step time and peak memory: lmrunner's Trainer beside transformers.Trainer,
full fine-tunes and LoRA.

    python bench/finetune.py [--steps 3] [--warmup 1] [--rounds 1] [--seq-len 256] [--only-set full|lora] [--heap]

Builds a model of Qwen2.5-0.5B's published shape (24 layers, hidden 896, 14 heads with 2 KV
heads, vocabulary 151,936, tied embeddings) with random weights, saves it once, then runs,
one after the other in this one invocation, each in a fresh subprocess of this script:
  1. transformers.Trainer, fp32, with its default optimizer and clipping (fused AdamW,
     max_grad_norm 1.0) at a constant learning rate, fed {"input_ids", "labels"} so the
     model shifts the labels itself;
  2. lmrunner's Trainer.training_step with precision fp32 (exact default kernels, as
     configure_precision leaves them on CPUs where the fast path is not fp32-accurate);
  3. the same with precision bf16, and again with reuse_cpu_memory off (glibc's malloc as
     it comes, which faults in fresh pages for every large buffer at every step);
  3b. transformers.Trainer with bf16=True (autocast), the bf16 figure to beat;
  4. transformers.Trainer on a peft LoRA model (r=16, alpha 32, dropout 0.05, every linear
     layer of the blocks: peft's "all-linear"), fp32;
  5.-8. lmrunner with the same LoRA settings (finetune=lora's), fp32 and bf16, each without
     and with gradient checkpointing.
Every contender starts from the same saved weights and sees the same random token windows
(batch 1 x seq-len), so the first-step losses must agree: fp32 to ~1e-5 relative (LoRA's B
matrices start at zero, so a LoRA model's first loss is its base's). Each measures its median
step time after the warm-up steps and its peak RSS. A subprocess per contender because a
process's peak RSS only ever grows: in one process every contender after the first would
inherit it.

Targets checked at the end: lmrunner fp32 <= 0.95x the Trainer's fp32 step time,
bf16 <= 0.4x and faster than the Trainer with bf16=True, peak memory <= the Trainer's; LoRA peak memory <= 0.45x lmrunner's full fp32 fine-tune, a LoRA
step <= 0.7x the full fine-tune's at the same precision, lmrunner LoRA fp32 <= Trainer + peft.

--heap adds what glibc's malloc held and had in use at their peaks (bench/heap.py): how much
of each peak is the allocator's slack. Its polling slows the steps, so take times without it.

Step times swing widely when anything else runs on the same cores, so each contender's line
also shows its fastest step and the load average as it ended (this benchmark alone keeps it
near the number of threads); --rounds N runs all of them N times, taking turns, and pools
the steps. About 4 minutes a round on an otherwise idle 2-core CPU; needs about 12 GB of
memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from heap import HeapSampler  # noqa: E402  bench/ is on the path
from machine import describe_machine, load_average, min_median, verdict  # noqa: E402  bench/ is on the path

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.models.hf_adapter import HFCausalLMAdapter  # noqa: E402
from trainer.models.lora import LoraSettings, apply_lora  # noqa: E402
from trainer.training.device import configure_precision  # noqa: E402
from trainer.training.host_memory import reuse_freed_memory  # noqa: E402
from trainer.training.loop import RunInfo, Trainer  # noqa: E402
from trainer.training.optimizer import create_optimizer  # noqa: E402
from trainer.training.parallel import SINGLE, place_model  # noqa: E402

CONTENDERS = {
    "trainer": "transformers.Trainer fp32",
    "fp32": "lmrunner fp32",
    "bf16": "lmrunner bf16",
    "bf16-system-malloc": "lmrunner bf16, no mem. reuse",
    "trainer-bf16": "transformers.Trainer bf16=True",
    "trainer-lora": "Trainer + peft LoRA fp32",
    "lora-fp32": "lmrunner LoRA fp32",
    "lora-bf16": "lmrunner LoRA bf16",
    "lora-fp32-gc": "lmrunner LoRA fp32 + GC",
    "lora-bf16-gc": "lmrunner LoRA bf16 + GC",
}
SETS = {
    "full": ["trainer", "trainer-bf16", "fp32", "bf16", "bf16-system-malloc"],
    "lora": [n for n in CONTENDERS if "lora" in n],
}
# Step-time ratio to the Trainer's fp32 step that each lmrunner precision must reach.
TIME_TARGETS = {"fp32": 0.95, "bf16": 0.4}
# finetune=lora's settings, on both sides.
LORA = LoraSettings(r=16, alpha=32.0, dropout=0.05, target_modules=["all-linear"], modules_to_save=[])
LORA_MEMORY_TARGET = 0.45  # x lmrunner's full fp32 fine-tune's peak
LORA_TIME_TARGET = 0.7  # x the full fine-tune's step at the same precision
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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar for one shard only clutters the table
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen_config())
    model.save_pretrained(str(directory))
    return sum(p.numel() for p in model.parameters())


def windows(count: int, seq_len: int, vocab_size: int) -> torch.Tensor:
    """``count`` windows of seq_len + 1 random ids: inputs and shifted targets, as lmrunner cuts them."""
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocab_size, (count, 1, seq_len + 1), generator=generator)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


# --- the contenders, one per subprocess --------------------------------------------------


def run_hf_trainer(
    model_dir: Path, batches: torch.Tensor, output_dir: Path, lora: bool, bf16: bool
) -> tuple[list[float], list[float]]:
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
    if lora:
        import peft

        config = peft.LoraConfig(
            r=LORA.r,
            lora_alpha=LORA.alpha,
            lora_dropout=LORA.dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(model, config)
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
        bf16=bf16,  # autocast over fp32 weights, as lmrunner's precision=bf16
    )
    timer = StepTimer()
    hf_trainer = LossRecordingTrainer(model=model, args=args, train_dataset=Windows(), callbacks=[timer])
    hf_trainer.train()
    return timer.times, [loss.item() for loss in losses]


class _NoTokenizer:
    """Training from token ids needs no tokenizer; the adapter only keeps a reference."""

    eos_id = None


def step_only_trainer(adapter, config: TrainingConfig, settings, output_dir: Path) -> Trainer:
    """lmrunner's Trainer for calling training_step alone: that needs neither a corpus nor
    validation batches, and the rest of the Trainer (run directory, hooks) is never reached."""
    device = torch.device("cpu")
    # Placed as a run places it (trainer/run/build.py): one process, and under bf16 a LoRA
    # base's frozen linear weights kept in bf16.
    autocast_dtype = place_model(adapter, SINGLE, device, config, settings.autocast_dtype)
    return Trainer(
        adapter,
        create_optimizer(adapter, config, device),
        config,
        val_dataloader=[],
        train_dataset=None,
        run=RunInfo(output_dir, "bench-finetune", "random token ids", ""),
        device=device,
        autocast_dtype=autocast_dtype,
    )


def run_lmrunner(
    model_dir: Path,
    batches: torch.Tensor,
    precision: str,
    output_dir: Path,
    lora: bool,
    checkpointing: bool,
    reuse_memory: bool = True,
) -> tuple[list[float], list[float]]:
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
        reuse_cpu_memory=reuse_memory,
    )
    # As a run sets it up: exact fp32 matmuls unless the probe shows the fast path is accurate,
    # and the memory a step frees kept for the next (reuse_cpu_memory), before the model loads.
    settings = configure_precision(precision, config.fast_matmul, device)
    reuse_freed_memory(config.reuse_cpu_memory)
    # The shipped loader: fp32 master weights whatever the saved dtype.
    adapter = HFCausalLMAdapter.load(model_dir, "qwen", tokenizer=_NoTokenizer())
    if lora:  # as a run with finetune=lora builds it (trainer/run/build.py)
        adapter = apply_lora(adapter, LORA, base_ref={"registry_name": "bench"})
    if checkpointing:
        adapter.enable_gradient_checkpointing()
    trainer = step_only_trainer(adapter, config, settings, output_dir)
    times, losses = [], []
    for ids in batches:
        started = time.perf_counter()
        losses.append(trainer.training_step((ids[:, :-1], ids[:, 1:])))
        times.append(time.perf_counter() - started)
    return times, losses


def run_one(name: str, model_dir: Path, warmup: int, steps: int, seq_len: int, heap: bool) -> None:
    """Child: one contender; prints one JSON line for the parent."""
    batches = windows(warmup + steps, seq_len, qwen_config().vocab_size)
    sampler = HeapSampler() if heap else None
    with sampler or contextlib.nullcontext(), tempfile.TemporaryDirectory() as tmp:
        if name.startswith("trainer"):
            times, losses = run_hf_trainer(
                model_dir, batches, Path(tmp), lora=name == "trainer-lora", bf16=name == "trainer-bf16"
            )
        else:
            precision = "bf16" if "bf16" in name else "fp32"
            times, losses = run_lmrunner(
                model_dir,
                batches,
                precision,
                Path(tmp),
                lora=name.startswith("lora"),
                checkpointing=name.endswith("-gc"),
                reuse_memory=not name.endswith("-system-malloc"),
            )
    result = {
        "name": name,
        "step_s": times[warmup:],
        "warmup_s": times[:warmup],
        "losses": losses,
        "peak_gb": peak_rss_gb(),
        "heap_gb": sampler.peaks_gb() if sampler is not None else None,
        "load_avg": os.getloadavg()[0],
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- the parent: all contenders, one after the other --------------------------------------


def run_child(name: str, model_dir: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--only", name, "--model-dir", str(model_dir)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seq-len", str(args.seq_len)]
    command += ["--heap"] if args.heap else []
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        sys.exit(f"{CONTENDERS[name]} failed (exit {done.returncode})")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["wall_s"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured optimizer steps per contender and round")
    parser.add_argument("--warmup", type=int, default=1, help="steps before measuring (first-touch of memory)")
    parser.add_argument("--rounds", type=int, default=1, help="times each contender runs, taking turns")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (batch is 1)")
    parser.add_argument(
        "--only-set",
        choices=list(SETS),
        help="only the full fine-tunes or only the LoRA ones (LoRA's memory and time targets need both)",
    )
    parser.add_argument(
        "--heap", action="store_true", help="also print malloc's peak bytes in use and held (slows the steps)"
    )
    parser.add_argument("--only", choices=list(CONTENDERS), help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0")
    if args.only:
        run_one(args.only, args.model_dir, args.warmup, args.steps, args.seq_len, args.heap)
        return

    names = SETS[args.only_set] if args.only_set else list(CONTENDERS)
    print(describe_machine())
    steps = {name: [] for name in names}
    peaks = {name: 0.0 for name in names}
    heaps = {}  # name -> [peak in use, peak held] in GB, the largest of its rounds
    first_losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        n_params = build_model(Path(tmp))
        print(
            f"Qwen2.5-0.5B shape, random weights: {n_params / 1e6:.0f}M parameters, "
            f"built and saved in {time.perf_counter() - started:.0f} s"
        )
        print(
            f"batch 1 x {args.seq_len} tokens; each contender: {args.warmup} warm-up + {args.steps} measured steps, "
            f"{args.rounds} round(s)\n"
        )
        for _ in range(args.rounds):
            for name in names:
                r = run_child(name, Path(tmp), args)
                steps[name] += r["step_s"]
                peaks[name] = max(peaks[name], r["peak_gb"])
                if r["heap_gb"] is not None:
                    heaps[name] = [max(pair) for pair in zip(heaps.get(name, r["heap_gb"]), r["heap_gb"], strict=True)]
                first_losses[name] = r["losses"][0]  # the same every round: same weights, same data
                print(
                    f"  {CONTENDERS[name]:<26} {r['wall_s']:4.0f} s, load avg {r['load_avg']:4.1f}; "
                    f"steps (s) {' '.join(f'{t:.2f}' for t in r['step_s'])}; "
                    f"losses {' '.join(f'{loss:.6f}' for loss in r['losses'])}"
                )
    print_table(names, steps, peaks, first_losses)
    if args.heap:
        print_heap_table(names, peaks, heaps)
    print("\ntargets:")
    medians = {name: statistics.median(steps[name]) for name in names}
    if "trainer" in names:
        print_full_targets(medians, peaks, first_losses)
    if "trainer-lora" in names:
        print_lora_targets(medians, peaks, first_losses, full_ran="fp32" in names)
    print(load_average())


def print_table(names, steps, peaks, first_losses) -> None:
    """Every contender against the first one (the Trainer of its set)."""
    base = names[0]
    base_time, base_peak, base_loss = statistics.median(steps[base]), peaks[base], first_losses[base]
    print(
        f"\n{'':<30} {'median step s':>13} {'vs ' + base:>16} {'fastest s':>9} {'peak GB':>8} {'vs ' + base:>16}"
        "  step-1 loss"
    )
    for name in names:
        fastest, step = min_median(steps[name])
        rel = abs(first_losses[name] - base_loss) / abs(base_loss)
        print(
            f"{CONTENDERS[name]:<30} {step:13.2f} {step / base_time:15.2f}x {fastest:9.2f} "
            f"{peaks[name]:8.2f} {peaks[name] / base_peak:15.2f}x  {first_losses[name]:.6f} (rel. diff {rel:.1e})"
        )


def print_heap_table(names, peaks, heaps) -> None:
    """Peak RSS beside malloc's peaks: held minus in use is fragmentation; RSS minus held is
    everything outside malloc (the libraries, weights loaded from a memory-mapped file)."""
    if not heaps:
        print("\nheap: mallinfo2 is not available here (glibc 2.33 or newer)")
        return
    print(f"\n{'':<30} {'peak RSS GB':>11} {'malloc in use':>13} {'malloc held':>11} {'held - in use':>13}")
    for name in names:
        in_use, held = heaps[name]
        print(f"{CONTENDERS[name]:<30} {peaks[name]:11.2f} {in_use:13.2f} {held:11.2f} {held - in_use:13.2f}")


def print_target(what: str, ratio: float, ok: bool | None, digits: str = ".2f") -> None:
    """One target line: what is compared, the measured ratio, PASS or MISS (None: a figure only)."""
    print(f"  {what:<62} {ratio:{digits}}{'x' if digits == '.2f' else ''}  {'' if ok is None else verdict(ok)}")


def print_full_targets(medians, peaks, first_losses) -> None:
    for name, target in TIME_TARGETS.items():
        ratio = medians[name] / medians["trainer"]
        print_target(f"{CONTENDERS[name]} step <= {target:.2f}x Trainer fp32's", ratio, ratio <= target)
        ratio = peaks[name] / peaks["trainer"]
        print_target(f"{CONTENDERS[name]} peak memory <= Trainer fp32's", ratio, ratio <= 1.0)
    ratio = medians["bf16"] / medians["trainer-bf16"]
    print_target(f"{CONTENDERS['bf16']} step < Trainer bf16=True's", ratio, ratio < 1.0)
    rel = abs(first_losses["fp32"] - first_losses["trainer"]) / abs(first_losses["trainer"])
    print_target("lmrunner fp32 step-1 loss = Trainer's (rel. diff <= 1e-5)", rel, rel <= 1e-5, ".1e")


def print_lora_targets(medians, peaks, first_losses, full_ran: bool) -> None:
    for name in [n for n in medians if n.startswith("lora")]:
        if full_ran:
            ratio = peaks[name] / peaks["fp32"]
            print_target(
                f"{CONTENDERS[name]} peak <= {LORA_MEMORY_TARGET:.2f}x full fp32's", ratio, ratio <= LORA_MEMORY_TARGET
            )
            full = "bf16" if "bf16" in name else "fp32"
            ratio = medians[name] / medians[full]
            print_target(
                f"{CONTENDERS[name]} step <= {LORA_TIME_TARGET:.2f}x full {full}'s", ratio, ratio <= LORA_TIME_TARGET
            )
        print_target(f"{CONTENDERS[name]} step vs Trainer + peft", medians[name] / medians["trainer-lora"], None)
    ratio = medians["lora-fp32"] / medians["trainer-lora"]
    print_target("lmrunner LoRA fp32 step <= Trainer + peft's (same settings)", ratio, ratio <= 1.0)
    rel = abs(first_losses["lora-fp32"] - first_losses["trainer-lora"]) / abs(first_losses["trainer-lora"])
    print_target("lmrunner LoRA fp32 step-1 loss = Trainer + peft's (rel. diff <= 1e-5)", rel, rel <= 1e-5, ".1e")


if __name__ == "__main__":
    main()

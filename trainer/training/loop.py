"""The Trainer: one optimizer step at a time, evaluation, sampling, checkpoints and hooks.

Everything that decides the numbers of a run (weights, optimizer moments, the step, the
data position and every RNG) is in the checkpoint, so a Trainer restored from one
(``trainer.run.build.restore_trainer``) continues bit for bit (on CPU) with ``fit`` as if the
run had never stopped.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from trainer.checkpoint.find import prune_checkpoints
from trainer.checkpoint.tensors import save_tensors
from trainer.checkpoint.write import write_checkpoint
from trainer.config.schema import TrainingConfig
from trainer.data.sampler import ResumableBatchSampler, train_loader
from trainer.errors import NonFiniteLossError, NonFiniteStateError, TrainingInterrupted
from trainer.models.adapter import IGNORE_INDEX
from trainer.training import distributed
from trainer.training.compiled import reproducible_kernels
from trainer.training.finite import first_non_finite, optimizer_tensors
from trainer.training.hooks import Hook
from trainer.training.lr_schedule import lr_at, set_lr
from trainer.training.optimizer import allocate_state, clip_gradients
from trainer.training.parallel import DDP, FSDP, SINGLE
from trainer.training.rng_state import capture_rng_state, rng_file_contents
from trainer.training.sharded_checkpoint import load_training_state, save_sharded_checkpoint
from trainer.training.state_files import OPTIMIZER_FILE, RNG_FILE, load_rng_state

# Signals that mean "save and stop": Ctrl-C, and what schedulers send before a kill or requeue.
_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")


@dataclass
class RunInfo:
    """Where a run lives and what it is: written into every checkpoint."""

    run_dir: Path
    run_id: str
    data_source: str
    data_sha256: str
    lineage: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # format, counts, template: what the data was


class Trainer:
    def __init__(
        self,
        adapter,  # a trainer.models.adapter.ModelAdapter: the model, its tokenizer and loss
        optimizer: torch.optim.Optimizer,
        config: TrainingConfig,
        val_dataloader: DataLoader,
        *,
        train_dataset: Dataset,
        run: RunInfo,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        hooks: Iterable[Hook] = (),
        step: int = 0,
        strategy: str = SINGLE,  # how the ranks share the work; the model is placed for it already
    ):
        if config.seed is None:
            raise ValueError("Trainer needs a resolved seed (run_training draws one)")
        self.adapter = adapter
        self.model = adapter.model
        self.tokenizer = adapter.tokenizer
        self.optimizer = optimizer
        self.config = config
        self.val_dataloader = val_dataloader
        self.train_dataset = train_dataset
        self.run = run
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.hooks = list(hooks)
        self.step = step
        self.last_checkpoint_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.last_loss: float | None = None
        self.last_val_loss: float | None = None
        self.last_grad_norm: float | None = None
        # Seconds of training before this process (a resumed run's checkpoint keeps them).
        self.elapsed_before = 0.0
        self._fit_started: float | None = None
        self._stop_signal: str | None = None  # a signal this process received
        self._stop_agreed: str | None = None  # the stop every rank agreed on at the last step
        self.ranks = distributed.current()
        self.strategy = strategy
        if self.ranks.distributed:
            # Each rank its own dropout stream (a resumed run then restores each rank's own).
            torch.manual_seed(config.seed + self.ranks.rank)

    # --- one step -------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, ...]) -> float:
        """One optimizer step on one global batch (under DDP: this rank's slice of it);
        returns the mean loss over the targets of the global batch.

        ``batch`` is (inputs, targets) or, for rows of packed examples, (inputs, targets,
        positions); a target of -100 does not count. With grad_accum_steps > 1 the batch is
        split into that many micro-batches whose gradients add up, so batch_size always
        means the batch one step learns from.
        """
        batch = [t.to(self.device, non_blocking=True) for t in batch]
        if not self.optimizer.state:  # a new run's first step: the moments before the activations
            allocate_state(self.optimizer)
        set_lr(self.optimizer, lr_at(self.step, self.config))
        self.model.train()
        micro_batches = self.config.grad_accum_steps
        # The mean over every target of the global batch: each micro-batch's summed loss is
        # divided by that count (known before the first backward), and multiplied by the
        # number of ranks, since DDP and FSDP average the ranks' gradients.
        targets = self._global_targets(batch[1])
        scale = self.ranks.world_size / targets
        total = torch.zeros((), device=self.device)
        for i, micro in enumerate(zip(*(t.chunk(micro_batches) for t in batch), strict=True)):
            with self._sync_gradients(last=i == micro_batches - 1), reproducible_kernels(self.config.compile):
                with self._autocast():
                    loss_sum = self.adapter.loss_sum(*micro)
                # Backward outside autocast (as torch's AMP recipe has it): the same kernels,
                # since backward ops follow their forward's dtypes, but autocast's cache of bf16
                # weight copies is dropped here, so each copy is freed once its layer's backward
                # no longer needs it instead of all of them living to the end of the step
                # (Qwen2.5-0.5B shape: about 0.8 GB less peak memory).
                (loss_sum * scale).backward()
            total += loss_sum.detach()
        mean_loss = self._agree(total) / targets
        if not math.isfinite(mean_loss):
            # Leave the weights as they were before this step: nothing non-finite is saved.
            self.optimizer.zero_grad(set_to_none=True)
            last = str(self.last_checkpoint) if self.last_checkpoint is not None else None
            raise NonFiniteLossError(self.step + 1, mean_loss, last)
        self.last_grad_norm = clip_gradients(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.last_loss = mean_loss
        return mean_loss

    def _global_targets(self, targets: torch.Tensor) -> int:
        """How many targets count in the global batch (every rank's share)."""
        count = (targets != IGNORE_INDEX).sum()
        if self.ranks.distributed:
            torch.distributed.all_reduce(count)
        return max(1, int(count.item()))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the targets of the fixed validation batches (dropout off, no RNG
        drawn). Under DDP the ranks share the batches out and the mean is over all of them."""
        self.model.eval()
        ranks = self.ranks
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # summed loss, targets
        for batch, counts in self._my_val_batches():
            batch = [t.to(self.device) for t in batch]
            with self._autocast(), reproducible_kernels(self.config.compile):
                loss_sum = self.adapter.loss_sum(*batch)
            if counts:
                total += torch.stack([loss_sum.detach().double(), (batch[1] != IGNORE_INDEX).sum().double()])
        if ranks.distributed:
            torch.distributed.all_reduce(total)
        self.model.train()
        self.last_val_loss = (total[0] / total[1].clamp(min=1)).item()
        return self.last_val_loss

    def _my_val_batches(self) -> Iterator[tuple[tuple[torch.Tensor, ...], bool]]:
        """This rank's share of the validation batches, each with whether it counts. Under
        FSDP every forward is collective (each block gathers its weights from all ranks), so
        every rank runs as many: a rank whose share is one short repeats a batch, uncounted."""
        ranks = self.ranks
        mine = [batch for i, batch in enumerate(self.val_dataloader) if i % ranks.world_size == ranks.rank]
        yield from ((batch, True) for batch in mine)
        if self.strategy == FSDP:
            rounds = -(-len(self.val_dataloader) // ranks.world_size)
            yield from (
                (mine[0] if mine else next(iter(self.val_dataloader)), False) for _ in range(rounds - len(mine))
            )

    def sample(
        self,
        prompt: str | None = None,
        max_length: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        """Prompt plus up to ``max_length`` generated tokens, reproducible for a given seed.

        Sampling draws from its own generator, so it never changes what training does next.
        """
        cfg = self.config
        prompt = cfg.sampling_prompt if prompt is None else prompt
        generator = torch.Generator().manual_seed(cfg.sampling_seed if seed is None else seed)
        prompt_ids = self.tokenizer.encode(prompt).to(self.device)
        if len(prompt_ids) == 0:  # an empty prompt starts from the tokenizer's start token
            prompt_ids = torch.full((1,), self.tokenizer.start_id, dtype=torch.int64, device=self.device)
        self.model.eval()
        with self._autocast():
            ids = self.adapter.generate(
                prompt_ids,
                max_new_tokens=cfg.sampling_max_length if max_length is None else max_length,
                temperature=cfg.sampling_temperature if temperature is None else temperature,
                generator=generator,
            )
        self.model.train()
        return self.tokenizer.decode(ids.cpu())

    # --- the loop -------------------------------------------------------------------

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches from this trainer's step on: one global batch per step."""
        sampler = ResumableBatchSampler(
            len(self.train_dataset),
            self.config.batch_size,
            self.config.seed,
            start_batch=self.step,
            rank=self.ranks.rank,
            world_size=self.ranks.world_size,
        )
        return iter(train_loader(self.train_dataset, sampler))

    def fit(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Train until ``max_steps``; ``batches`` (default: ``train_batches()``) must start at this step."""
        batches = self.train_batches() if batches is None else batches
        self._fit_started = time.perf_counter()
        with self._stop_on_signals():
            while self.step < self.config.max_steps:
                started = time.perf_counter()
                batch = next(batches)
                tokens_per_step = batch[0].numel() * self.ranks.world_size
                loss = self.training_step(batch)
                elapsed = time.perf_counter() - started
                self.report(
                    "step",
                    loss=loss,
                    lr=self.optimizer.param_groups[0]["lr"],
                    tokens_per_s=round(tokens_per_step / elapsed, 1),
                    grad_norm=self.last_grad_norm,
                    tokens_seen=self.step * tokens_per_step,
                    elapsed_s=round(self.elapsed_s(), 3),
                )
                for hook in self.hooks:
                    hook.on_step_end(self)
                if self._stop_agreed:
                    self._save_and_stop()
            for hook in self.hooks:
                hook.on_run_end(self)

    def elapsed_s(self) -> float:
        """Seconds spent training this run, earlier processes included (loading excluded)."""
        if self._fit_started is None:
            return self.elapsed_before
        return self.elapsed_before + time.perf_counter() - self._fit_started

    def report(self, event: str, **fields: Any) -> None:
        record = {"event": event, "step": self.step, **fields}
        for hook in self.hooks:
            hook.on_event(self, record)

    def _agree(self, local_loss: torch.Tensor) -> float:
        """The global batch's summed loss, and whether any rank was asked to stop, in one
        all-reduce: so every rank stops after the same step, whichever got the signal."""
        stop_code = _STOP_SIGNALS.index(self._stop_signal) + 1 if self._stop_signal else 0
        if not self.ranks.distributed:
            self._stop_agreed = self._stop_signal
            return local_loss.item()
        loss = local_loss.detach().double().reshape(1)
        stop = torch.tensor([stop_code], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(loss)
        # MAX, not a sum: every rank then names the same signal and exits with the same code.
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item() and not self._stop_agreed:
            self._stop_agreed = _STOP_SIGNALS[int(stop.item()) - 1]
        return loss.item()

    def _sync_gradients(self, last: bool):
        """Under DDP, gradients are averaged over ranks only on the last micro-batch. FSDP
        reduce-scatters them at every micro-batch: putting that off would keep every rank's
        whole unsharded gradients until the last, the memory FSDP is there to save."""
        if last or self.strategy != DDP:
            return contextlib.nullcontext()
        return self.adapter.train_module.no_sync()

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 finish the current step, save a checkpoint
        and stop. SLURM sends SIGTERM (or the signal asked for with --signal, USR1 or
        submitit's USR2) before it kills or requeues a job.

        A second signal while saving falls through to the default handler. Off the main
        thread (where handlers cannot be installed) signals keep their default behaviour.
        """

        def request_stop(signum, frame):
            self._stop_signal = signal.Signals(signum).name
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

        try:
            previous = {
                getattr(signal, name): signal.signal(getattr(signal, name), request_stop) for name in _STOP_SIGNALS
            }
        except ValueError:
            previous = {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _save_and_stop(self) -> None:
        path = self.save_checkpoint() if self.last_checkpoint_step != self.step else self.last_checkpoint
        raise TrainingInterrupted(self._stop_agreed, self.step, str(path))

    # --- checkpoints ----------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Every rank calls this at the same step; rank 0 writes (the unwrapped model, the
        optimizer state every rank shares, and each rank's RNG state) and tells the others
        where. Under FSDP every rank writes its shards (sharded_checkpoint.py)."""
        if self.strategy == FSDP:
            path = save_sharded_checkpoint(self)
        else:
            rng_states = distributed.gather_to_main(capture_rng_state())
            path = distributed.on_main(lambda: self._write_checkpoint(rng_states))
        self.last_checkpoint_step, self.last_checkpoint = self.step, path
        return path

    def _write_checkpoint(self, rng_states: list[dict[str, Any]]) -> Path:
        self._check_finite()  # before any file of this step exists: nothing non-finite is ever saved
        rng = rng_file_contents(rng_states)
        writers = [
            lambda d: self.adapter.save(d, self.run.lineage),
            lambda d: save_tensors(self.optimizer.state_dict(), d / OPTIMIZER_FILE),
            lambda d: save_tensors(rng, d / RNG_FILE),
        ]
        path = write_checkpoint(self.run.run_dir / "checkpoints", self.step, writers, self.trainer_state())
        self.after_checkpoint(path)
        return path

    def after_checkpoint(self, path: Path) -> None:
        """Rank 0, once a checkpoint is in place: say so, and prune the older ones."""
        self.report("checkpoint", path=str(path))
        deleted = prune_checkpoints(self.run.run_dir / "checkpoints", self.config.keep_last_checkpoints, self.step)
        if deleted:
            self.report("checkpoint_pruned", paths=[str(p) for p in deleted])

    def _check_finite(self) -> None:
        """The loss of a step can be finite while the update it made is not (an infinite rate)."""
        last = str(self.last_checkpoint) if self.last_checkpoint is not None else None
        bad = first_non_finite(self.model.state_dict().items())
        if bad is not None:
            raise NonFiniteStateError(self.step, f"the weights ({bad})", last)
        bad = first_non_finite(optimizer_tensors(self.optimizer, self.model))
        if bad is not None:
            raise NonFiniteStateError(self.step, f"the optimizer state ({bad})", last)

    def trainer_state(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "config": self.config.to_dict(),
            "config_hash": self.config.config_hash(),
            "seed": self.config.seed,
            # The data order is a function of (seed, batch number): this is the cursor.
            "sampler": {"seed": self.config.seed, "next_batch": self.step},
            "tokenizer": self.tokenizer.identifier,
            "data_source": self.run.data_source,
            "data_sha256": self.run.data_sha256,
            "data": self.run.data,
            "lineage": self.run.lineage,
            "last_loss": self.last_loss,
            "last_val_loss": self.last_val_loss,
            "elapsed_s": round(self.elapsed_s(), 3),
            # Who wrote it: a resume by another strategy or number of ranks says it is not bit-exact.
            "parallel": {"strategy": self.strategy, "world_size": self.ranks.world_size},
        }

    def load_state_files(self, path: Path) -> None:
        """Load optimizer and RNG state from a verified checkpoint directory, whole or sharded
        (the adapter has loaded the weights from it already, except an FSDP run's from shards,
        which each rank reads here)."""
        load_training_state(self, path, sharded_run=self.strategy == FSDP)
        load_rng_state(path, self.ranks)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

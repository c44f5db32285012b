"""TrainingConfig: the one schema that both front doors (--config and Hydra) validate against.

Type checks come from OmegaConf's structured configs (``trainer.config.compose``); the rules
that involve values or several fields live in ``TrainingConfig.validate``, which runs on every
construction, so an invalid TrainingConfig cannot exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import ConfigError, ConfigValueError, did_you_mean

LR_SCHEDULES = ("cosine", "constant")
DATA_FORMATS = ("auto", "text", "completion", "chat")
LONG_EXAMPLES = ("truncate", "drop")
# What data_columns may rename: the columns each data format reads.
DATA_COLUMNS = ("text", "prompt", "completion", "messages", "instruction", "input", "output")
PRECISIONS = ("fp32", "bf16")
# How the ranks of a torchrun share the work: auto is ddp; fsdp shards the model over them.
STRATEGIES = ("auto", "ddp", "fsdp")
# Trackers a run can report to besides events.jsonl (trainer/run/loggers/).
LOGGERS = ("tensorboard", "mlflow", "wandb", "csv")
# What a sweep's job returns to an optimizing sweeper (Optuna): a field of its summary line.
SWEEP_METRICS = ("final_val_loss", "final_loss")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# Keys that may change when a run is resumed: they steer how far and how visibly the run
# goes, not the numbers it computes. Everything else must match the checkpoint.
RESUMABLE_KEYS = frozenset(
    {
        "max_steps",
        "data_path",  # the data itself is checked by its sha256, not by its path
        "val_data_path",  # what evaluation reads, not what training computes
        "eval_cadence",
        "eval_batches",
        "sampling_cadence",
        "sampling_temperature",
        "sampling_prompt",
        "sampling_max_length",
        "sampling_seed",
        "checkpoint_cadence",
        "keep_last_checkpoints",
        "device",
        "resume",
        "registry_dir",  # where to find models, not which
        "reuse_cpu_memory",  # where freed memory goes, not what is computed
        "gradient_checkpointing",  # how much memory the same arithmetic takes
        "loggers",
        "sweep_metric",
        # How the ranks share the work: the same numbers to float rounding, as on any number
        # of ranks (a resume says when it cannot be bit-exact).
        "strategy",
        "fsdp_reshard_after_forward",
        "fsdp_cpu_offload",
    }
)
# Keys that say how a run is found or watched, not what it computes: left out of config_hash,
# so continuing a run, or adding a tracker to it, keeps its hash. The strategy keys say how
# the ranks share the work, which (like their number, not in the config at all) leaves the
# numbers as they are, to float rounding; reuse_cpu_memory leaves them as they are, bit for bit.
_NOT_HASHED = (
    "resume",
    "branch",
    "loggers",
    "sweep_metric",
    "strategy",
    "fsdp_reshard_after_forward",
    "fsdp_cpu_offload",
    "reuse_cpu_memory",
)


@dataclass
class TrainingConfig:
    # --- model architecture (ignored for imported models, which bring their own) ---
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    max_seq_len: int = 256

    # --- optimisation ---
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    batch_size: int = 16
    max_steps: int = 10000
    grad_accum_steps: int = 1
    grad_clip: float | None = 1.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    lr_decay_steps: int | None = None
    min_lr_ratio: float = 0.1

    # --- data ---
    data_path: str | None = None
    train_ratio: float = 0.95
    val_data_path: str | None = None
    data_format: str = "auto"
    data_columns: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. {prompt: question}
    chat_template: str | None = None  # a Jinja string or a file holding one
    train_on_prompt: bool = False
    packing: bool = True
    long_examples: str = "truncate"

    # --- evaluation and sampling ---
    eval_cadence: int | None = None
    eval_batches: int = 20
    sampling_cadence: int | None = None
    sampling_temperature: float = 1.0
    sampling_prompt: str = "The"
    sampling_max_length: int = 100
    sampling_seed: int = 42

    # --- checkpoints ---
    checkpoint_cadence: int | None = 1000
    keep_last_checkpoints: int | None = 3

    # --- runtime ---
    seed: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    fast_matmul: bool = True
    # torch.compile the training forward (and so its backward). Off by default: on the CPUs
    # measured it was no faster than eager for these models (README "Performance").
    compile: bool = False
    # On Linux CPUs: keep the memory a step frees for the next, instead of faulting in fresh
    # pages for every large buffer at every step (trainer/training/host_memory.py).
    reuse_cpu_memory: bool = True
    # Under torchrun: ddp (auto) keeps a whole copy of the model on every rank; fsdp shards
    # weights, gradients and optimizer state over the ranks (FSDP2's fully_shard).
    strategy: str = "auto"
    fsdp_reshard_after_forward: bool = True  # free each block's gathered weights after its forward
    fsdp_cpu_offload: bool = False  # keep the shards and the optimizer step on the CPU (a GPU run)

    # --- model selection ---
    model_name: str | None = None
    tokenizer: str | None = None
    registry_dir: str | None = None

    # --- LoRA (peft) and memory ---
    lora_r: int | None = None  # null: a full fine-tune
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    lora_modules_to_save: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False

    # --- run control ---
    resume: str | None = None
    # With resume: register the checkpoint as registry model <branch> and start a new
    # fine-tune from it (step 0, fresh optimizer, any setting may change).
    branch: str | None = None

    # --- watching runs ---
    # Trackers fed from the run's events, besides events.jsonl: a list from LOGGERS.
    loggers: list[str] = field(default_factory=list)
    sweep_metric: str = "final_val_loss"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigValueError naming the key (and the other key of a cross-field rule)."""
        # First: inf and nan pass comparisons such as learning_rate > 0 (or fail them with a
        # misleading rule), and an infinite rate turns the weights non-finite at step 1.
        for key in _FLOAT_FIELDS:
            value = getattr(self, key)
            _require(self, key, value is None or math.isfinite(value), "must be a finite number")
        for key in (
            "n_layers",
            "d_model",
            "n_heads",
            "d_ff",
            "max_seq_len",
            "batch_size",
            "max_steps",
            "grad_accum_steps",
            "eval_batches",
            "sampling_max_length",
        ):
            _require(self, key, getattr(self, key) >= 1, "must be a positive integer")
        for key in (
            "eval_cadence",
            "sampling_cadence",
            "checkpoint_cadence",
            "keep_last_checkpoints",
            "lr_decay_steps",
        ):
            value = getattr(self, key)
            _require(self, key, value is None or value >= 1, "must be a positive integer or null")
        _require(self, "warmup_steps", self.warmup_steps >= 0, "must be >= 0")
        _require(self, "dropout", 0.0 <= self.dropout < 1.0, "must satisfy 0 <= dropout < 1")
        _require(self, "train_ratio", 0.0 < self.train_ratio < 1.0, "must satisfy 0 < train_ratio < 1")
        _require(self, "learning_rate", self.learning_rate > 0, "must be > 0")
        _require(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        for key in ("beta1", "beta2"):
            _require(self, key, 0.0 <= getattr(self, key) < 1.0, "must satisfy 0 <= beta < 1")
        _require(self, "grad_clip", self.grad_clip is None or self.grad_clip > 0, "must be > 0 or null (no clipping)")
        _require(self, "min_lr_ratio", 0.0 <= self.min_lr_ratio <= 1.0, "must satisfy 0 <= min_lr_ratio <= 1")
        _require(self, "sampling_temperature", self.sampling_temperature >= 0, "must be >= 0 (0 means greedy)")
        _require(self, "seed", self.seed is None or 0 <= self.seed < 2**63, "must be in [0, 2**63) or null (draw one)")
        _require(self, "sampling_seed", 0 <= self.sampling_seed < 2**63, "must be in [0, 2**63)")
        _require(self, "lr_schedule", self.lr_schedule in LR_SCHEDULES, f"must be one of {', '.join(LR_SCHEDULES)}")
        _require(self, "precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}")
        _require(self, "device", bool(_DEVICE_PATTERN.match(self.device)), "must be auto, cpu, mps, cuda or cuda:N")
        _require(self, "strategy", self.strategy in STRATEGIES, f"must be one of {', '.join(STRATEGIES)}")
        self._validate_fsdp_switches()
        if self.compile and self.strategy == "fsdp":
            raise ConfigValueError(
                "compile",
                True,
                "does not combine with strategy=fsdp: set compile=false or strategy=ddp",
                "strategy",
                "fsdp",
            )
        _require(self, "data_format", self.data_format in DATA_FORMATS, f"must be one of {', '.join(DATA_FORMATS)}")
        _require(
            self, "long_examples", self.long_examples in LONG_EXAMPLES, f"must be one of {', '.join(LONG_EXAMPLES)}"
        )
        unknown = sorted(set(self.data_columns) - set(DATA_COLUMNS))
        _require(self, "data_columns", not unknown, f"may rename only {', '.join(DATA_COLUMNS)} (not {unknown})")
        _require(self, "sweep_metric", self.sweep_metric in SWEEP_METRICS, f"must be one of {', '.join(SWEEP_METRICS)}")
        _require(
            self, "lora_r", self.lora_r is None or self.lora_r >= 1, "must be a positive integer or null (no LoRA)"
        )
        if self.lora_r is not None and self.model_name is None:
            raise ConfigError(
                f"lora_r={self.lora_r} needs a model to adapt, and model_name is null (a new model trains in full)",
                key="lora_r",
                hint="set model_name to a registry model (model=qwen-base, or a model you registered), or lora_r=null",
            )
        _require(self, "lora_alpha", self.lora_alpha > 0, "must be > 0")
        _require(self, "lora_dropout", 0.0 <= self.lora_dropout < 1.0, "must satisfy 0 <= lora_dropout < 1")
        _require(
            self, "lora_target_modules", bool(self.lora_target_modules), "must name at least one module (or all-linear)"
        )
        self._validate_loggers()
        if self.d_model % self.n_heads != 0:
            raise ConfigValueError("d_model", self.d_model, "must be divisible by n_heads", "n_heads", self.n_heads)
        if self.batch_size % self.grad_accum_steps != 0:
            raise ConfigValueError(
                "batch_size",
                self.batch_size,
                "must be divisible by grad_accum_steps",
                "grad_accum_steps",
                self.grad_accum_steps,
            )

    def _validate_fsdp_switches(self) -> None:
        """FSDP's switches away from their defaults under another strategy would do nothing."""
        if self.strategy == "fsdp":
            return
        for key, default in (("fsdp_cpu_offload", False), ("fsdp_reshard_after_forward", True)):
            if getattr(self, key) != default:
                raise ConfigValueError(key, getattr(self, key), "needs strategy=fsdp", "strategy", self.strategy)

    def _validate_loggers(self) -> None:
        for name in self.loggers:
            if name not in LOGGERS:
                rule = f"names {name!r}{did_you_mean(name, LOGGERS)}: each must be one of {', '.join(LOGGERS)}"
                raise ConfigValueError("loggers", self.loggers, rule)
        _require(self, "loggers", len(set(self.loggers)) == len(self.loggers), "names a logger twice")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short sha256 of what determines the numbers a run computes.

        ``resume`` and ``branch`` only say where a run came from, and ``loggers`` and
        ``sweep_metric`` how it is watched, so they are left out: a resumed run keeps the
        hash of the run it continues.
        """
        values = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _require(cfg: TrainingConfig, key: str, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigValueError(key, getattr(cfg, key), rule)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainingConfig))
FIELD_TYPES = typing.get_type_hints(TrainingConfig)
LIST_FIELDS = tuple(name for name in FIELD_NAMES if typing.get_origin(FIELD_TYPES[name]) is list)
_FLOAT_FIELDS = tuple(name for name in FIELD_NAMES if FIELD_TYPES[name] in (float, float | None))
# Fields that hold a mapping (the rest hold one value each).
MAPPING_FIELDS = tuple(name for name in FIELD_NAMES if typing.get_origin(FIELD_TYPES[name]) is dict)

"""What a run says about itself at the start: the run_start event's fields and the console lines.

The model section answers "what is being trained and where did it come from": the custom
Transformer's shape and "trained from scratch", or the registry model (name, Hub id,
architecture, source, size on disk) and its fine-tuning lineage.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch

from trainer.models.source import ModelSource

log = logging.getLogger("lmrunner")
# A source checkout: where git_commit looks (an installed wheel has no .git above it).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def fine_tune_mode(lineage: dict[str, Any], resumed: bool, continuing: bool) -> str | None:
    """How this run relates to the model it trains: None for a model trained from scratch."""
    parent = lineage.get("fine_tuned_from")
    if parent is None:
        return None
    if "branched_from" in lineage and not resumed:
        return f"new branch {parent} from checkpoint {lineage['branched_from']}"
    if resumed:
        return f"continuing the fine-tune of {parent}" + ("" if continuing else " (in a new run directory)")
    return f"new fine-tune of {parent}"


def model_metadata(trainer, source: ModelSource | None) -> dict[str, Any]:
    """The model section of run_start. ``source`` is None on resume: the model then comes
    from the checkpoint, and its lineage says where it came from before that."""
    config, lineage = trainer.config, trainer.run.lineage
    described = trainer.adapter.describe()
    meta: dict[str, Any] = {
        "model_name": config.model_name,
        "architecture_type": trainer.adapter.architecture_type,
        "origin": lineage.get("origin"),
        **described,
        # The ones the optimizer updates: all of them, or a LoRA run's adapters.
        "trainable_parameters": sum(p.numel() for p in trainer.adapter.trainable_parameters()),
    }
    if lineage.get("fine_tuned_from") is not None:
        meta["model_id"] = lineage.get("model_id")
    if source is not None and source.entry is not None:
        entry = source.entry
        meta.update(
            model_id=source.model_id,
            source=entry.source,
            revision=entry.revision,
            disk_size_bytes=entry.disk_size_bytes,
            registry_num_parameters=entry.num_parameters,
        )
    meta["seq_len"] = min(config.max_seq_len, trainer.adapter.max_positions)
    meta["config_settings_overridden"] = trainer.adapter.overridden_settings(config)
    return meta


def run_metadata(trainer, *, seed_source, precision, host_memory, hooks, source, fine_tune) -> dict[str, Any]:
    config = trainer.config
    return {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "git_commit": git_commit(),
        "seed": config.seed,
        "seed_source": seed_source,
        "hooks": [hook.describe() for hook in hooks],
        "model": model_metadata(trainer, source),
        "lineage": trainer.run.lineage,
        "fine_tune": fine_tune,
        "tokenizer": {"identifier": trainer.tokenizer.identifier, "override": config.tokenizer},
        # source, sha256, the format decided and why, examples, tokens, target tokens,
        # truncated and dropped examples, the chat template's sha256, the token cache.
        "data": trainer.run.data,
        "device": str(trainer.device),
        "world_size": trainer.ranks.world_size,  # DDP or FSDP ranks; batch_size is the global batch
        "strategy": trainer.strategy,  # single, ddp or fsdp: how the ranks share the work
        # Which process writes the run: `runs list` tells a running run from a killed one by it.
        "process": {"host": socket.gethostname(), "pid": os.getpid()},
        "precision": _precision(config, precision, trainer.strategy),
        "host_memory": host_memory,  # what serves the CPU's large buffers (reuse_cpu_memory)
        "versions": {"lmrunner": lmrunner_version(), "torch": torch.__version__, "python": platform.python_version()},
    }


def log_start(run, meta: dict[str, Any], resume, continuing: bool) -> None:
    model, data = meta["model"], meta["data"]
    log.info("run %s (config %s) in %s", run.run_id, meta["config_hash"], run.run_dir)
    if resume:
        how = "continuing the run" if continuing else "as a new branch"
        log.info("resumed from %s at step %d, %s", resume.checkpoint, resume.state["step"], how)
    log.info("model: %s", _describe_model(model))
    if meta["fine_tune"]:
        log.info("fine-tune: %s; lineage %s", meta["fine_tune"], " -> ".join(meta["lineage"].get("chain") or []))
    if model["config_settings_overridden"]:
        log.warning(
            "the model's own architecture wins; ignored from the config: %s",
            ", ".join(model["config_settings_overridden"]),
        )
    if model["seq_len"] < meta["config"]["max_seq_len"]:
        log.warning(
            "max_seq_len=%d capped to %d, the positions the model has", meta["config"]["max_seq_len"], model["seq_len"]
        )
    log.info(
        "data: %s, %s (%s): %s tokens%s, tokenizer %s%s; tokens %s",
        data["source"],
        data["format"],
        data["format_reason"],
        f"{data['tokens']:,}",
        ""
        if data["format"] == "text"
        else f" in {data['examples']:,} examples, {data['target_tokens']:,} of them targets",
        meta["tokenizer"]["identifier"],
        f", override {meta['tokenizer']['override']}" if meta["tokenizer"]["override"] else "",
        "from the cache" if data["token_cache_hit"] else "cached",
    )
    log.info(
        "device: %s, %s (%s); seed %d (%s)",
        meta["device"],
        meta["precision"]["matmul"],
        meta["precision"]["note"],
        meta["seed"],
        meta["seed_source"],
    )
    if meta["world_size"] > 1:
        log.info(
            "%s: %d ranks, each %d of the global batch of %d%s",
            meta["strategy"].upper(),
            meta["world_size"],
            meta["config"]["batch_size"] // meta["world_size"],
            meta["config"]["batch_size"],
            ", the model sharded over them" if meta["strategy"] == "fsdp" else "",
        )
    log.info("hooks: %s", ", ".join(meta["hooks"]))


def _describe_model(model: dict[str, Any]) -> str:
    params = f"{model['num_parameters']:,} parameters"
    if model.get("lora"):
        lora = model["lora"]
        params += f" ({model['trainable_parameters']:,} of them trainable: LoRA r={lora['r']} alpha={lora['alpha']:g})"
    if model["architecture_type"] == "custom-transformer" and model["model_name"] is None:
        return (
            f"custom-transformer, {model['n_layers']} layers, d_model {model['d_model']}, {model['n_heads']} heads, "
            f"d_ff {model['d_ff']}, vocabulary {model['vocab_size']}, {params}, {model['origin']}"
        )
    where = f" ({model['model_id']})" if model.get("model_id") else ""
    size = f", {model['disk_size_bytes'] / 1e6:,.1f} MB on disk" if model.get("disk_size_bytes") else ""
    return f"{model['model_name']}{where}: {model['architecture_type']}, {model['n_layers']} layers, {params}{size}"


def git_commit() -> str | None:
    """The commit of the lmrunner source tree, with '-dirty' for uncommitted changes; None
    when lmrunner does not run from a git checkout (an installed wheel)."""
    if not (PROJECT_ROOT / ".git").exists():
        return None
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True)
    return result.stdout.strip()


def lmrunner_version() -> str | None:
    try:
        return package_metadata.version("lmrunner")
    except package_metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return None


def _precision(config, precision, strategy: str) -> dict[str, Any]:
    """What the run computes in. Under FSDP, bf16 is FSDP's mixed precision, not autocast."""
    described = {"setting": config.precision, "matmul": precision.matmul, "note": precision.note}
    if strategy == "fsdp" and precision.autocast_dtype is not None:
        described["matmul"] = "bf16 through FSDP's MixedPrecisionPolicy"
        described["note"] = "bf16 compute, fp32 shards and gradient reduction: not bit-comparable with fp32 runs"
    if config.compile:
        described["matmul"] += ", torch.compile"
    return described

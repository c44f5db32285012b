"""LoRA through peft: adapters on a frozen base model, saved without the base.

``apply_lora`` injects peft's LoRA layers into a loaded model (the custom Transformer's
``nn.Linear`` layers as readily as a Hugging Face model's) and freezes everything else;
``LoraAdapter`` is the ModelAdapter of the result: it trains, generates and scores through
the base adapter (whose model now carries the LoRA layers) and saves only the adapter, in
peft's own layout (``adapter_config.json``, ``adapter_model.safetensors``), so
``peft.PeftModel.from_pretrained(base, directory)`` loads it as it is.

Beside the adapter, ``lmrunner_base.json`` names its base: the registry model, its Hub id
and revision, and the sha256 of its weights, which a load checks. ``load_lora`` puts a saved
adapter back on its base; ``load_base`` loads a registry model to put one on, and when that
model is itself an adapter, merges it into its own base first: a new adapter stacks on the
merged weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from registry.store import Registry
from trainer.data.tokenizers import load_tokenizer
from trainer.errors import ConfigError, UsageError
from trainer.extras import import_extra
from trainer.models.adapter import CUSTOM_ARCHITECTURE, ModelAdapter
from trainer.models.loading import load_adapter
from trainer.models.model_card import write_model_card
from trainer.models.source import registry_model

ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "lmrunner_base.json"


def is_adapter_dir(directory: Path) -> bool:
    return (directory / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: list[str]
    modules_to_save: list[str]

    @classmethod
    def of(cls, config) -> LoraSettings:
        return cls(
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            list(config.lora_target_modules),
            list(config.lora_modules_to_save),
        )


class LoraAdapter:
    """A base adapter whose model carries peft's LoRA layers: everything but saving and
    describing is the base adapter's own (its model object is the one peft injected into)."""

    def __init__(self, base: ModelAdapter, peft_model, base_ref: dict[str, Any]):
        self.base = base
        self.peft_model = peft_model
        self.base_ref = base_ref  # what lmrunner_base.json records

    def __getattr__(self, name: str) -> Any:  # model, tokenizer, loss_sum, generate, ...: the base's
        return getattr(self.__dict__["base"], name)

    @property
    def train_module(self) -> nn.Module:
        return self.base.train_module

    @train_module.setter
    def train_module(self, module: nn.Module) -> None:  # DDP wraps the model the base computes with
        self.base.train_module = module

    def save(self, directory: Path, lineage: dict[str, Any], weights: dict[str, Any] | None = None) -> None:
        """The adapter alone (no base weights), its tokenizer, the base it needs, a model card.
        ``weights``: the trainable weights gathered whole (an FSDP run's, whose own are shards),
        keyed as the base model names them."""
        self.save_adapter_files(directory, weights)
        self.base.tokenizer.save_pretrained(directory)
        (directory / BASE_FILE).write_text(json.dumps(self.base_ref, indent=2, sort_keys=True), encoding="utf-8")
        write_model_card(directory, lineage, relation="adapter", library="peft")

    def save_adapter_files(self, directory: Path, weights: dict[str, Any] | None = None) -> None:
        """peft's adapter_config.json and adapter_model.safetensors. The embedding matrix is never
        saved with them: a LoRA run does not resize the vocabulary, and peft's "auto" would ask
        the Hub for the base's config to find out (offline: a warning, online: a download)."""
        # peft names the weights from its own wrapper down: base_model (LoraModel), model (the base's).
        state = None if weights is None else {f"base_model.model.{k}": v for k, v in weights.items()}
        self.peft_model.save_pretrained(str(directory), save_embedding_layers=False, state_dict=state)

    def describe(self) -> dict[str, Any]:
        config = self.peft_model.peft_config["default"]
        targets = config.target_modules
        return {
            **self.base.describe(),
            "lora": {
                "r": config.r,
                "alpha": config.lora_alpha,
                "dropout": config.lora_dropout,
                # peft records each layer's full name; the kinds of layer are what was asked for
                "target_modules": sorted({n.rsplit(".", 1)[-1] for n in targets})
                if not isinstance(targets, str)
                else targets,
            },
            "base": self.base_ref,
        }

    def merged(self) -> ModelAdapter:
        """The base adapter with the LoRA weights folded into its own (the adapter gone)."""
        self.base.model = self.peft_model.merge_and_unload()
        self.base.train_module = self.base.model
        return self.base


def apply_lora(adapter: ModelAdapter, settings: LoraSettings, base_ref: dict[str, Any]) -> LoraAdapter:
    """New LoRA adapters on ``adapter``'s model (its weights frozen, the adapters trainable)."""
    peft = import_extra("peft", "lora", "LoRA (lora_r)", key="lora_r")
    targets = _targets(adapter, settings.target_modules)
    lora = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=settings.modules_to_save or None,
        task_type=None if adapter.architecture_type == CUSTOM_ARCHITECTURE else "CAUSAL_LM",
    )
    try:
        with _peft_quietly():
            peft_model = peft.get_peft_model(adapter.model, lora)
    except ValueError as err:  # peft: target modules not found (NoMatchingPeftModuleError is one)
        raise ConfigError(
            f"lora_target_modules={settings.target_modules} names no module of this model ({str(err).splitlines()[0]})",
            key="lora_target_modules",
            hint=f"its linear layers are named: {', '.join(linear_layer_names(adapter.model))} (or use all-linear)",
        ) from err
    return LoraAdapter(adapter, peft_model, base_ref)


@contextlib.contextmanager
def _peft_quietly():
    """peft asks transformers' models for a deprecated attribute (is_gradient_checkpointing),
    and transformers warns each time: a warning to peft's authors, not to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _targets(adapter: ModelAdapter, names: list[str]) -> str | list[str]:
    """peft's target_modules: ``all-linear`` for a Hugging Face model (peft leaves out the
    output layer), and the linear layers of the blocks for the custom Transformer."""
    if names != ["all-linear"]:
        return names
    if adapter.architecture_type == CUSTOM_ARCHITECTURE:
        return sorted({name.rsplit(".", 1)[-1] for name, m in adapter.model.blocks.named_modules() if _linear(m)})
    return "all-linear"


def check_targets(directory: Path, targets: list[str]) -> None:
    """Refuse, before anything loads, a target name that no layer of the model has (as peft
    matches them: the layer's name, or its last parts). The names come from the weights'
    safetensors headers: milliseconds, where loading the model takes seconds."""
    if targets == ["all-linear"]:
        return
    from safetensors import safe_open

    layers = set()
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            layers |= {
                k.removesuffix(".weight")
                for k in weights.keys()  # noqa: SIM118 (safe_open is not iterable)
                if k.endswith(".weight") and len(weights.get_slice(k).get_shape()) == 2
            }
    missing = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in layers)]
    if missing and layers:
        short = sorted({name.rsplit(".", 1)[-1] for name in layers})
        raise ConfigError(
            f"lora_target_modules names {', '.join(missing)}, which this model does not have",
            key="lora_target_modules",
            hint=f"its layers with weight matrices are named: {', '.join(short)} (or use all-linear)",
        )


def _linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def linear_layer_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _linear(module) and name})


def base_reference(registry: Registry, name: str) -> dict[str, Any]:
    """What an adapter records of the registry model it applies to."""
    source = registry_model(registry, name)
    entry = source.entry
    return {
        "registry_name": name,
        "model_id": source.model_id,
        "revision": entry.revision,
        "weights_sha256": weights_sha256(entry.files),
    }


def weights_sha256(files: dict[str, dict[str, Any]]) -> str:
    """One sha256 over the sha256s of a model's weight files, as the registry recorded them."""
    weights = sorted((name, f["sha256"]) for name, f in files.items() if name.endswith(".safetensors"))
    return hashlib.sha256(json.dumps(weights).encode()).hexdigest()


def weights_directory(registry: Registry, directory: Path) -> Path:
    """Where the weights are: ``directory``, or for an adapter, its base's (its base's base...)."""
    while is_adapter_dir(directory):
        name = json.loads((directory / BASE_FILE).read_text(encoding="utf-8"))["registry_name"]
        if name not in registry.entries():
            break  # loading it says what is missing
        directory = registry.model_dir(registry.get(name))
    return directory


def load_base(registry: Registry, name: str, dropout: float, tokenizer=None) -> ModelAdapter:
    """A registry model to train on or to put an adapter on; an adapter model is merged into
    its own base first (recursively), so what comes back is plain weights."""
    source = registry_model(registry, name)
    if not is_adapter_dir(source.directory):
        return load_adapter(source.directory, source.architecture_type, dropout, tokenizer)
    return load_lora(source.directory, registry, dropout, trainable=False).merged()


def load_lora(directory: Path, registry: Registry, dropout: float, trainable: bool) -> LoraAdapter:
    """A saved adapter (a checkpoint of a LoRA run, or a registered adapter model) on its
    base, loaded from the registry and checked to be the weights it was trained on."""
    peft = import_extra("peft", "lora", f"the LoRA adapter {directory}")
    ref = json.loads((directory / BASE_FILE).read_text(encoding="utf-8"))
    name = ref["registry_name"]
    if name not in registry.entries():
        raise UsageError(
            f"{directory} is a LoRA adapter of the registry model '{name}', which is not in the registry at {registry.root}",
            hint="import or register that base model again (under the same name), or point registry_dir at its registry",
        )
    actual = base_reference(registry, name)["weights_sha256"]
    if actual != ref["weights_sha256"]:
        raise UsageError(
            f"{directory} is a LoRA adapter of '{name}', whose weights have changed since it was trained "
            "(another import or revision)",
            hint="put back the base it was trained on (see its lmrunner_base.json: model_id and revision)",
        )
    base = load_base(registry, name, dropout, tokenizer=None)
    base.tokenizer = load_tokenizer(directory)  # the run's tokenizer travels with the adapter
    with _peft_quietly():
        peft_model = peft.PeftModel.from_pretrained(base.model, str(directory), is_trainable=trainable)
    return LoraAdapter(base, peft_model, ref)

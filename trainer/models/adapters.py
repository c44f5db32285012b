"""Model adapters: what the Trainer needs from a model, whatever its architecture.

The Trainer never touches a model directly. An adapter owns the loss convention, generation,
which parameters train, and how the model and its tokenizer are saved and loaded:

- ``CustomTransformerAdapter``: lmrunner's character-level Transformer (``trainer/model.py``),
  new from the config or loaded from a checkpoint or registry directory.
- ``HFCausalLMAdapter``: any Hugging Face causal LM that needs no remote code (Qwen, Llama,
  Mistral, GPT-2, ...), saved in the ``save_pretrained`` layout so transformers loads a
  checkpoint directly.

Both are fed the same batches: ``inputs`` and ``targets`` are windows of one token stream,
``targets`` already shifted by one position.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from trainer.models.transformer import Transformer, TransformerShape
from trainer.data.tokenizers import HFTokenizer, load_tokenizer
from trainer.data.char_tokenizer import CharTokenizer

CUSTOM_ARCHITECTURE = "custom-transformer"
WEIGHTS_FILE = "model.safetensors"
CUSTOM_CONFIG_FILE = "model_config.json"
MODEL_CARD_FILE = "README.md"


class ModelAdapter(Protocol):
    architecture_type: str
    model: nn.Module  # the model itself: saved, described, sampled from
    train_module: nn.Module  # what ``loss`` runs through: ``model``, or DistributedDataParallel around it
    tokenizer: Any  # CharTokenizer or HFTokenizer: encode, decode, vocab_size, identifier
    max_positions: int  # the longest window the model can take

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross entropy; ``targets`` are already the next tokens."""

    def generate(
        self, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Prompt plus sampled continuation (1-D ids), drawing only from ``generator``."""

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def save(self, directory: Path, lineage: dict[str, Any]) -> None:
        """Weights, tokenizer and architecture into ``directory``, loadable by ``load_adapter``."""

    def describe(self) -> dict[str, Any]:
        """The architecture, for run metadata."""

    def overridden_settings(self, config: Any) -> list[str]:
        """Architecture settings of ``config`` that this model's own architecture overrides."""


# --- lmrunner's own Transformer ------------------------------------------------------------


class CustomTransformerAdapter:
    architecture_type = CUSTOM_ARCHITECTURE

    def __init__(self, model: Transformer, tokenizer: CharTokenizer | HFTokenizer, from_config: bool):
        self.model = model
        self.train_module: nn.Module = model  # what the loss runs through: the model, or DDP around it
        self.tokenizer = tokenizer
        self.max_positions = model.shape.max_seq_len
        self._from_config = from_config  # a new model takes its shape from the config itself

    @classmethod
    def new(cls, shape: TransformerShape, tokenizer) -> CustomTransformerAdapter:
        return cls(Transformer(shape), tokenizer, from_config=True)

    @classmethod
    def load(cls, directory: Path, dropout: float) -> CustomTransformerAdapter:
        """A saved model with its own vocabulary and shape; dropout is a training setting."""
        tokenizer = load_tokenizer(directory)
        shape = dataclasses.replace(_saved_shape(directory, tokenizer.vocab_size), dropout=dropout)
        adapter = cls(Transformer(shape), tokenizer, from_config=False)
        load_model(adapter.model, str(directory / WEIGHTS_FILE))
        return adapter

    def loss(self, inputs, targets):
        return self.train_module(inputs, targets)[1]

    def generate(self, prompt_ids, max_new_tokens, temperature, generator):
        return self.model.generate(
            prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, generator=generator
        )

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, directory, lineage):
        save_model(self.model, str(directory / WEIGHTS_FILE))
        self.tokenizer.save_pretrained(directory)
        shape = dataclasses.asdict(self.model.shape)
        (directory / CUSTOM_CONFIG_FILE).write_text(
            json.dumps({"architecture_type": CUSTOM_ARCHITECTURE, **shape}, indent=2), encoding="utf-8"
        )

    def describe(self):
        return {**dataclasses.asdict(self.model.shape), "num_parameters": self.model.num_parameters()}

    def overridden_settings(self, config):
        if self._from_config:
            return []
        shape = self.model.shape
        return _differences(
            config,
            {"n_layers": shape.n_layers, "d_model": shape.d_model, "n_heads": shape.n_heads, "d_ff": shape.d_ff},
        )


def _saved_shape(directory: Path, vocab_size: int) -> TransformerShape:
    """The shape in model_config.json; a checkpoint without one has it in its saved config."""
    described = directory / CUSTOM_CONFIG_FILE
    if described.is_file():
        values = json.loads(described.read_text(encoding="utf-8"))
    else:
        values = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))["config"]
        values["vocab_size"] = vocab_size
    fields = {f.name for f in dataclasses.fields(TransformerShape)}
    return TransformerShape(**{k: v for k, v in values.items() if k in fields})


# --- Hugging Face causal LMs ---------------------------------------------------------------


class HFCausalLMAdapter:
    def __init__(self, model: nn.Module, tokenizer: HFTokenizer, architecture_type: str):
        self.model = model
        self.train_module: nn.Module = model  # what the loss runs through: the model, or DDP around it
        self.tokenizer = tokenizer
        self.architecture_type = architecture_type
        config = model.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)

    @classmethod
    def load(cls, directory: Path, architecture_type: str, tokenizer: HFTokenizer | None = None) -> HFCausalLMAdapter:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its bars would tear through the run's own
        # fp32 master weights whatever the saved dtype (Qwen ships bf16): the optimizer needs
        # them, bf16 runs autocast, and a checkpoint reloads bit for bit.
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
        return cls(model, tokenizer or load_tokenizer(directory), architecture_type)

    def loss(self, inputs, targets):
        # No labels=: transformers would shift them by one more position. Our targets are
        # shifted already, so the loss is plain cross entropy over every position.
        logits = self.train_module(input_ids=inputs, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens, temperature, generator):
        """Sampling with the KV cache; the draws come from ``generator`` (on the CPU), never
        the global RNG, so sampling cannot change what training does next."""
        ids = prompt_ids.view(1, -1)
        past, feed, new = None, ids, []
        room = max(0, self.max_positions - ids.shape[1])
        for _ in range(min(max_new_tokens, room)):
            out = self.model(input_ids=feed, past_key_values=past, use_cache=True)
            past = out.past_key_values
            last = out.logits[0, -1].float().cpu()
            if temperature == 0:  # greedy
                token = last.argmax().view(1)
            else:
                token = torch.multinomial(F.softmax(last / temperature, dim=-1), 1, generator=generator)
            new.append(token)
            if token.item() == self.tokenizer.eos_id:
                break
            feed = token.view(1, 1).to(ids.device)
        return torch.cat([ids[0].cpu(), *new]) if new else ids[0].cpu()

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, directory, lineage):
        self.model.save_pretrained(str(directory))  # safetensors, config.json, generation_config.json
        self.tokenizer.save_pretrained(directory)
        write_model_card(directory, lineage)

    def describe(self):
        c = self.model.config
        return {
            "model_type": c.model_type,
            "n_layers": getattr(c, "num_hidden_layers", None),
            "hidden_size": getattr(c, "hidden_size", None),
            "n_heads": getattr(c, "num_attention_heads", None),
            "n_kv_heads": getattr(c, "num_key_value_heads", None),
            "intermediate_size": getattr(c, "intermediate_size", None),
            "vocab_size": getattr(c, "vocab_size", None),
            "max_position_embeddings": self.max_positions,
            "tie_word_embeddings": getattr(c, "tie_word_embeddings", None),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def overridden_settings(self, config):
        c = self.model.config
        own = {
            "n_layers": getattr(c, "num_hidden_layers", None),
            "d_model": getattr(c, "hidden_size", None),
            "n_heads": getattr(c, "num_attention_heads", None),
            "d_ff": getattr(c, "intermediate_size", None),
            # The model's own dropout settings (attention_dropout, ...) stay as it was trained.
            "dropout": getattr(c, "attention_dropout", getattr(c, "attn_pdrop", None)),
        }
        return _differences(config, own)


def write_model_card(directory: Path, lineage: dict[str, Any]) -> None:
    """README.md whose metadata names the base model, as the Hugging Face Hub expects."""
    from huggingface_hub import ModelCard, ModelCardData

    model_id = lineage.get("model_id")
    data = ModelCardData(
        library_name="transformers",
        tags=["lmrunner", "fine-tuned"],
        # Only a real Hub repo id may stand here; a model imported from a local folder has none.
        base_model=model_id,
        base_model_relation="finetune" if model_id else None,
    )
    chain = " -> ".join(lineage.get("chain") or []) or "-"
    text = (
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# Fine-tune of {lineage.get('fine_tuned_from')}\n\n"
        f"Fine-tuned with lmrunner from the registry model `{lineage.get('fine_tuned_from')}`"
        f" ({model_id or 'imported from a local directory'}).\n\n"
        f"- lineage: {chain}\n"
        f"- fine-tune started: {lineage.get('fine_tune_started_at')}\n"
        f"- architecture: {lineage.get('architecture_type')}\n\n"
        "trainer_state.json beside this file holds the step, the full training config and the run id.\n"
    )
    ModelCard(text).save(directory / MODEL_CARD_FILE)


def load_adapter(directory: Path, architecture_type: str, dropout: float, tokenizer=None) -> ModelAdapter:
    """The model saved in ``directory`` (a registry model or a checkpoint) behind its adapter."""
    if architecture_type == CUSTOM_ARCHITECTURE:
        adapter = CustomTransformerAdapter.load(directory, dropout)
        if tokenizer is not None:
            adapter.tokenizer = tokenizer
        return adapter
    return HFCausalLMAdapter.load(directory, architecture_type, tokenizer)


def _differences(config: Any, own: dict[str, Any]) -> list[str]:
    return [
        f"{key}={getattr(config, key)!r} (the model has {value!r})"
        for key, value in own.items()
        if value is not None and getattr(config, key) != value
    ]

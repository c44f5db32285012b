"""The adapter of lmrunner's own Transformer (trainer/models/transformer.py): new or loaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_model, save_model

from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.tokenizers import HFTokenizer, load_tokenizer
from trainer.models.adapter import CUSTOM_ARCHITECTURE, settings_overridden, token_loss_sum
from trainer.models.transformer import Transformer, TransformerShape

WEIGHTS_FILE = "model.safetensors"
CUSTOM_CONFIG_FILE = "model_config.json"


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
    def load(cls, directory: Path, dropout: float, weights: dict | None = None) -> CustomTransformerAdapter:
        """A saved model with its own vocabulary and shape; dropout is a training setting.
        ``weights``: its state dict, where the directory holds shards instead of the file."""
        tokenizer = load_tokenizer(directory)
        shape = dataclasses.replace(_saved_shape(directory, tokenizer.vocab_size), dropout=dropout)
        adapter = cls(Transformer(shape), tokenizer, from_config=False)
        if weights is not None:
            adapter.model.load_state_dict(weights)
        else:
            load_model(adapter.model, str(directory / WEIGHTS_FILE))
        return adapter

    # A character vocabulary has no end-of-text token: generation runs to its full length.
    stop_ids: frozenset[int] = frozenset()

    def loss_sum(self, inputs, targets, positions=None):
        logits = self.train_module(inputs, None, positions)[0]
        return token_loss_sum(logits, targets)

    def loss(self, inputs, targets):
        return self.train_module(inputs, targets)[1]

    def logits(self, inputs):
        return self.model(inputs)[0]

    def generate(self, prompt_ids, max_new_tokens, temperature, generator, *, top_k=None, top_p=None, on_token=None):
        return self.model.generate(
            prompt_ids, max_new_tokens, temperature, generator, top_k=top_k, top_p=top_p, on_token=on_token
        )

    def enable_gradient_checkpointing(self) -> None:
        self.model.gradient_checkpointing = True

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, directory, lineage, weights=True):
        if weights:  # an FSDP checkpoint keeps them as shards beside these files
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
        return settings_overridden(
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

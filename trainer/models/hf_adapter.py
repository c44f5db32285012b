"""The adapter of any Hugging Face causal LM that needs no remote code."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.data.tokenizers import HFTokenizer, load_tokenizer, refuse_custom_code
from trainer.models.adapter import settings_overridden
from trainer.models.model_card import write_model_card


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
        refuse_custom_code(directory)  # before transformers could offer to run it
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, trust_remote_code=False)
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
        return settings_overridden(config, own)

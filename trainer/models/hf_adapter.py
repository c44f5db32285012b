"""The adapter of any Hugging Face causal LM that needs no remote code."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from trainer.data.tokenizers import HFTokenizer, load_tokenizer, refuse_custom_code
from trainer.models.adapter import count_targets, settings_overridden, token_loss_sum
from trainer.models.model_card import write_model_card
from trainer.models.transformer import within_examples


class _EachNewToken:
    """A streamer for transformers' ``generate`` (its put/end protocol), which hands over the
    prompt first and then each new token: the prompt is passed by, each new id goes to ``on_token``."""

    def __init__(self, on_token):
        self.on_token = on_token
        self.prompt_passed = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_passed:
            self.prompt_passed = True
            return
        for token in value.flatten().tolist():
            self.on_token(token)

    def end(self) -> None:
        pass


class HFCausalLMAdapter:
    def __init__(self, model: nn.Module, tokenizer: HFTokenizer, architecture_type: str):
        self.model = model
        self.train_module: nn.Module = model  # what the loss runs through: the model, or DDP around it
        self.tokenizer = tokenizer
        self.architecture_type = architecture_type
        config = model.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)

    @classmethod
    def load(
        cls, directory: Path, architecture_type: str, tokenizer: HFTokenizer | None = None, weights: dict | None = None
    ) -> HFCausalLMAdapter:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its bars would tear through the run's own
        # fp32 master weights whatever the saved dtype (Qwen ships bf16): the optimizer needs
        # them, bf16 runs autocast, and a checkpoint reloads bit for bit.
        refuse_custom_code(directory)  # before transformers could offer to run it
        if weights is None:
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, trust_remote_code=False)
        else:
            model = _from_config(directory, weights)
        return cls(model, tokenizer or load_tokenizer(directory), architecture_type)

    @property
    def stop_ids(self) -> frozenset[int]:
        """The tokens that end a text: the tokenizer's EOS, and those the model's generation
        config names (a chat model's end of turn, such as Qwen's <|im_end|>)."""
        ids = {self.tokenizer.eos_id}
        generation_config = getattr(self.model, "generation_config", None)
        named = getattr(generation_config, "eos_token_id", None)
        ids |= set(named) if isinstance(named, (list, tuple)) else {named}
        return frozenset(i for i in ids if i is not None)

    def loss_sum(self, inputs, targets, positions=None):
        # No labels=: transformers would shift them by one more position. Our targets are
        # shifted already, so the loss is plain cross entropy over every counted position.
        logits = self.train_module(input_ids=inputs, use_cache=False, **self._packed(positions)).logits
        return token_loss_sum(logits, targets)

    def loss(self, inputs, targets):
        return self.loss_sum(inputs, targets) / count_targets(targets)

    def logits(self, inputs):
        return self.model(input_ids=inputs, use_cache=False).logits

    def _packed(self, positions) -> dict:
        """For a row of packed examples: each example's own positions, and attention that
        stays within it. FlashAttention 2 reads that from the restarting positions alone;
        eager and sdpa attention (the CPU's) take it as a 4-D additive mask (a boolean one
        is right for sdpa but not for eager, which adds the mask to the scores)."""
        if positions is None:
            return {}
        if "flash" in str(getattr(self.model.config, "_attn_implementation", "")):
            return {"position_ids": positions}
        blocked = ~within_examples(positions)
        mask = torch.zeros(blocked.shape, device=positions.device).masked_fill(blocked, torch.finfo(torch.float32).min)
        return {"position_ids": positions, "attention_mask": mask}

    @torch.no_grad()
    def generate(self, prompt_ids, max_new_tokens, temperature, generator, *, top_k=None, top_p=None, on_token=None):
        """Sampling (greedy at temperature 0, top-k and top-p as given) through transformers'
        own ``generate``, with its KV cache, stopping at a stop token. Its draws come from the
        global RNG, so they run in a forked RNG seeded from ``generator``: the same generator
        gives the same text, and sampling never changes what training does next. ``on_token``
        sees each new id as it is produced."""
        from transformers import GenerationConfig

        ids = prompt_ids.view(1, -1)
        room = max(0, self.max_positions - ids.shape[1])
        new_tokens = min(max_new_tokens, room)
        if new_tokens == 0:
            return ids[0].cpu()
        sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k or 0, "top_p": top_p or 1.0}
        stop = sorted(self.stop_ids)
        # Explicit, so the model's own generation_config (top_p, repetition penalties) stays out.
        config = GenerationConfig(
            max_new_tokens=new_tokens,
            eos_token_id=stop or None,
            pad_token_id=stop[0] if stop else 0,
            **(sampling if temperature else {}),
        )
        streamer = _EachNewToken(on_token) if on_token is not None else None
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[ids.device] if ids.device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer
            )
        return out[0].cpu()

    def enable_gradient_checkpointing(self) -> None:
        # Non-reentrant: correct with frozen inputs (LoRA) and with DDP, and it keeps dropout's RNG.
        # transformers 5 renamed it (the old name warns); older releases have only the old one.
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, directory, lineage, weights=True):
        if weights:
            self.model.save_pretrained(str(directory))  # safetensors, config.json, generation_config.json
        else:  # an FSDP checkpoint keeps them as shards beside these files
            self.model.config.save_pretrained(str(directory))
            if getattr(self.model, "generation_config", None) is not None:
                self.model.generation_config.save_pretrained(str(directory))
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


def _from_config(directory: Path, weights: dict) -> nn.Module:
    """The model of ``directory``'s config.json with ``weights`` (an FSDP checkpoint's, gathered
    from its shards), in fp32 as from_pretrained gives it."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(weights)
    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    return model

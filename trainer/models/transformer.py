"""The custom character-level Transformer: a GPT-style decoder, readable top to bottom.

Pre-norm blocks (LayerNorm before attention and before the MLP), learned positional
embeddings, causal attention through ``F.scaled_dot_product_attention`` (which picks the
fastest kernel the device has), and an output head tied to the token embedding.

Generation keeps a KV cache (``KVCache``): each new token runs through the model alone,
attending to the keys and values kept from the positions before it, instead of re-running
the whole context (O(n) work per token instead of O(n^2)). Training never passes a cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from trainer.models import cpu_attention, cpu_dropout
from trainer.models.sampling import SamplingSettings, pick_next_token


@dataclass(frozen=True)
class TransformerShape:
    """Everything that fixes the model's parameters, and nothing else."""

    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    max_seq_len: int
    dropout: float


class Dropout(nn.Module):
    """nn.Dropout, with cheaper masks on the CPU (trainer/models/cpu_dropout.py); other devices
    keep torch's fused kernel."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return cpu_dropout.dropout(x, self.p)


class LayerCache:
    """One layer's keys and values, (batch, heads, positions, head_dim), for the positions so
    far. The buffers hold every position the model has, allocated at the first use: a new
    token is written in place instead of copying all the earlier ones at every step."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' keys and values; return those of every position so far."""
        if self.keys is None:
            batch, heads, _, head_dim = keys.shape
            self.keys = keys.new_empty(batch, heads, self.capacity, head_dim)
            self.values = values.new_empty(batch, heads, self.capacity, head_dim)
        end = self.length + keys.shape[2]
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


@dataclass
class KVCache:
    """What generation keeps between tokens: every layer's keys and values so far."""

    capacity: int  # the model's positions
    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0  # positions cached

    def layer(self, index: int) -> LayerCache:
        while len(self.layers) <= index:
            self.layers.append(LayerCache(self.capacity))
        return self.layers[index]


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.n_heads = shape.n_heads
        self.dropout = shape.dropout
        # One projection for queries, keys and values: one matmul instead of three.
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model)
        self.proj = nn.Linear(shape.d_model, shape.d_model)
        self.proj_dropout = Dropout(shape.dropout)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """``attend`` (batch, 1, seq, seq), True where a position may look: for rows of packed
        examples, causal within each example; None: plain causal attention. ``cache``: the
        keys and values of the positions before (generation)."""
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(x).split(d_model, dim=2)
        # (batch, seq, d_model) -> (batch, heads, seq, head_dim)
        q, k, v = (t.view(batch, seq, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            # Generation: a prompt fills an empty cache (causal, as in training); after it, one
            # new position at a time attends to every position before it and to itself.
            if seq > 1 and cache.length > 0:
                raise ValueError("a cache takes a prompt once, then one token at a time")
            k, v = cache.extend(k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=seq > 1)
        elif self.training and x.device.type == "cpu":
            # SDPA has no CPU kernel with dropout, and its bf16 backward is slow.
            y = cpu_attention.training_attention(q, k, v, self.dropout, attend)
        else:
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=attend is None, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(batch, seq, d_model)
        return self.proj_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.up = nn.Linear(shape.d_model, shape.d_ff)
        self.down = nn.Linear(shape.d_ff, shape.d_model)
        self.dropout = Dropout(shape.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): pre-norm keeps deep stacks stable."""

    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.attn_norm = nn.LayerNorm(shape.d_model)
        self.attn = CausalSelfAttention(shape)
        self.mlp_norm = nn.LayerNorm(shape.d_model)
        self.mlp = FeedForward(shape)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), attend, cache)
        return x + self.mlp(self.mlp_norm(x))


def within_examples(positions: torch.Tensor) -> torch.Tensor:
    """(batch, 1, seq, seq) True where position i may attend to position j: j <= i and both
    in the same example (an example starts where its position is 0)."""
    example = torch.cumsum(positions == 0, dim=1)
    seq = positions.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=positions.device).tril()
    return (causal & (example[:, :, None] == example[:, None, :]))[:, None]


class Transformer(nn.Module):
    # The layer that is never split across devices (the Hugging Face attribute): FSDP shards
    # each Block on its own (trainer/training/fsdp.py).
    _no_split_modules = ["Block"]

    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.shape = shape
        self.token_embedding = nn.Embedding(shape.vocab_size, shape.d_model)
        self.position_embedding = nn.Embedding(shape.max_seq_len, shape.d_model)
        self.embedding_dropout = Dropout(shape.dropout)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.final_norm = nn.LayerNorm(shape.d_model)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        # Weight tying: the output head reuses the input embedding (fewer parameters, and
        # it usually trains better at this size).
        self.lm_head.weight = self.token_embedding.weight
        # Trade compute for memory: recompute each block's activations in backward.
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual branch adds to the stream, so its output
        # projection starts smaller the more layers there are.
        residual_std = 0.02 / math.sqrt(2 * shape.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        # parameters() yields the tied embedding once, so this counts it once.
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits, loss). ``targets`` are already shifted by one position; -100 marks
        one the loss leaves out, and the loss is the mean over the others. ``positions``
        (batch, seq), for rows of packed examples, restart at 0 where an example starts:
        each example then sees its own positions and only its own tokens. With a ``cache``
        (generation), ``tokens`` continue the positions it holds and are added to it."""
        start = cache.length if cache is not None else 0
        seq = tokens.shape[1]
        if start + seq > self.shape.max_seq_len:
            raise ValueError(f"sequence of {start + seq} tokens exceeds max_seq_len {self.shape.max_seq_len}")
        attend = None
        if positions is None:
            positions = torch.arange(start, start + seq, device=tokens.device)
        else:
            attend = within_examples(positions)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for index, block in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training and cache is None:
                # Keep only each block's input; backward runs the block again. The RNG state is
                # saved and restored around the rerun, so dropout draws the same masks.
                x = checkpoint(block, x, attend, None, use_reentrant=False)
            else:
                x = block(x, attend, cache.layer(index) if cache is not None else None)
        if cache is not None:
            cache.length += seq
        logits = self.lm_head(self.final_norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_ids: Collection[int] = (),
        on_token: Callable[[int], None] | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample up to ``max_new_tokens`` after ``prompt`` (1-D token ids); returns all ids.

        ``generator`` is the caller's own RNG, so sampling never disturbs the training RNG.
        Temperature 0 means greedy decoding. Generation stops after a token in ``stop_ids``
        (which is returned). ``on_token`` sees each new id as it is drawn.
        """
        settings = SamplingSettings(temperature, top_k, top_p)
        new = []
        for token in self.stream(prompt, max_new_tokens, settings, generator, use_cache=use_cache):
            new.append(token)
            if on_token is not None:
                on_token(token)
            if token in stop_ids:
                break
        return torch.cat([prompt, torch.tensor(new, dtype=prompt.dtype, device=prompt.device)])

    @torch.no_grad()
    def stream(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        settings: SamplingSettings,
        generator: torch.Generator,
        use_cache: bool = True,
    ) -> Iterator[int]:
        """Yield new token ids one at a time. With the cache or without it, the same ids: the
        logits agree to float rounding, and the draws come from the same generator."""
        tokens = prompt.unsqueeze(0)
        cache = KVCache(self.shape.max_seq_len) if use_cache else None
        for _ in range(max_new_tokens):
            next_token = pick_next_token(self._next_token_logits(tokens, cache), settings, generator)
            tokens = torch.cat([tokens, next_token.to(tokens.device)], dim=1)
            yield int(next_token)

    def _next_token_logits(self, tokens: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """The logits after the last of ``tokens``, shape (1, vocab)."""
        if cache is None or tokens.shape[1] > self.shape.max_seq_len:
            # Without a cache, or past the model's positions: the last max_seq_len tokens run
            # again. Once the window slides every position shifts, so what the cache holds is
            # stale from then on.
            logits, _ = self(tokens[:, -self.shape.max_seq_len :])
        else:
            logits, _ = self(tokens[:, cache.length :], cache=cache)  # the prompt once, then each new token
        return logits[:, -1, :]

"""The custom character-level Transformer: a GPT-style decoder, readable top to bottom.

Pre-norm blocks (LayerNorm before attention and before the MLP), learned positional
embeddings, causal attention through ``F.scaled_dot_product_attention`` (which picks the
fastest kernel the device has), and an output head tied to the token embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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
    """nn.Dropout, with a cheaper random mask on the CPU.

    torch's CPU dropout spends about a quarter of a training step of the default model
    drawing one 32-bit random number per element. Sixteen random bits decide just as well
    (the drop probability becomes a multiple of 1/65536, and the scale matches it exactly),
    and one 64-bit draw yields four of them. Other devices keep torch's fused kernel.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * cpu_keep_mask(x.shape, self.p, x.dtype)


def cpu_keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """0 where an element is dropped, 1 / keep_probability where it is kept."""
    count = math.prod(shape)
    bits = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
    bits = bits.view(torch.int16)[:count].view(shape)
    threshold = round(p * 65536) - 32768  # int16 values below it are dropped
    keep_probability = (32768 - threshold) / 65536
    return (bits >= threshold).to(dtype).mul_(1.0 / keep_probability)


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: TransformerShape):
        super().__init__()
        self.n_heads = shape.n_heads
        self.dropout = shape.dropout
        # One projection for queries, keys and values: one matmul instead of three.
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model)
        self.proj = nn.Linear(shape.d_model, shape.d_model)
        self.proj_dropout = Dropout(shape.dropout)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        """``attend`` (batch, 1, seq, seq), True where a position may look: for rows of packed
        examples, causal within each example; None: plain causal attention."""
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(x).split(d_model, dim=2)
        # (batch, seq, d_model) -> (batch, heads, seq, head_dim)
        q, k, v = (t.view(batch, seq, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            y = self._attention_with_cpu_dropout(q, k, v, attend)
        else:
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=attend is None, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(batch, seq, d_model)
        return self.proj_dropout(self.proj(y))

    def _attention_with_cpu_dropout(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attend: torch.Tensor | None
    ) -> torch.Tensor:
        """What SDPA computes, spelled out. On the CPU, SDPA has no fused kernel with
        dropout and falls back to these same steps, with torch's slower mask."""
        seq = q.shape[2]
        # -inf above the diagonal: position i may only look at positions <= i. Built for this
        # window, not kept as a max_seq_len^2 buffer in every layer.
        causal = torch.full((seq, seq), float("-inf"), device=q.device).triu(1)
        if attend is not None:
            causal = torch.zeros(attend.shape, device=q.device).masked_fill(~attend, float("-inf"))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1])) + causal
        weights = scores.softmax(dim=-1)
        return (weights * cpu_keep_mask(weights.shape, self.dropout, weights.dtype)) @ v


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

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), attend)
        return x + self.mlp(self.mlp_norm(x))


def within_examples(positions: torch.Tensor) -> torch.Tensor:
    """(batch, 1, seq, seq) True where position i may attend to position j: j <= i and both
    in the same example (an example starts where its position is 0)."""
    example = torch.cumsum(positions == 0, dim=1)
    seq = positions.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=positions.device).tril()
    return (causal & (example[:, :, None] == example[:, None, :]))[:, None]


class Transformer(nn.Module):
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
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits, loss). ``targets`` are already shifted by one position; -100 marks
        one the loss leaves out, and the loss is the mean over the others. ``positions``
        (batch, seq), for rows of packed examples, restart at 0 where an example starts:
        each example then sees its own positions and only its own tokens."""
        seq = tokens.shape[1]
        if seq > self.shape.max_seq_len:
            raise ValueError(f"sequence of {seq} tokens exceeds max_seq_len {self.shape.max_seq_len}")
        attend = None
        if positions is None:
            positions = torch.arange(seq, device=tokens.device)
        else:
            attend = within_examples(positions)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, attend)
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
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after ``prompt`` (1-D token ids); returns all ids.

        ``generator`` is the caller's own RNG, so sampling never disturbs the training RNG.
        Temperature 0 means greedy decoding.
        """
        tokens = prompt.unsqueeze(0)
        for _ in range(max_new_tokens):
            context = tokens[:, -self.shape.max_seq_len :]
            logits, _ = self(context)
            last = logits[:, -1, :].float()
            if temperature == 0:
                next_token = last.argmax(dim=-1, keepdim=True)
            else:
                probs = F.softmax(last / temperature, dim=-1)
                # Sample on the CPU with the CPU generator: the same ids on every device.
                next_token = torch.multinomial(probs.cpu(), 1, generator=generator).to(tokens.device)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens[0]

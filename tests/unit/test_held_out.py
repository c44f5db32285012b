"""Scoring held-out text: every target once, masked targets (-100) left out of loss and count."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.held_out import IGNORE_INDEX, ScoringTokens, scoring_batches, text_tokens, window_count
from trainer.errors import DataError
from trainer.models.custom_adapter import CustomTransformerAdapter
from trainer.models.perplexity import measure_perplexity
from trainer.models.transformer import TransformerShape

TEXT = "the cat sat on the mat; the dog sat on the log. " * 3


@pytest.fixture(scope="module")
def adapter():
    tokenizer = CharTokenizer.from_text(TEXT)
    shape = TransformerShape(
        tokenizer.vocab_size, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_seq_len=16, dropout=0
    )
    torch.manual_seed(0)
    adapter = CustomTransformerAdapter.new(shape, tokenizer)
    adapter.model.eval()
    return adapter


def tokens_of(adapter, text=TEXT):
    return text_tokens(text, adapter.tokenizer, "held-out.txt", "sha")


@pytest.mark.parametrize(("seq_len", "batch_size"), [(16, 4), (7, 3), (200, 2)])
def test_the_batches_cover_every_target_once_in_order(adapter, seq_len, batch_size):
    tokens = tokens_of(adapter)
    batches = list(scoring_batches(tokens, seq_len, batch_size))
    assert torch.equal(torch.cat([t.flatten() for _, t in batches]), tokens.targets)
    assert torch.equal(torch.cat([i.flatten() for i, _ in batches]), tokens.inputs)
    assert all(i.shape[1] <= seq_len and i.shape[0] <= batch_size for i, _ in batches)
    assert sum(i.shape[0] for i, _ in batches) == window_count(tokens, seq_len) == math.ceil(len(TEXT[1:]) / seq_len)


def test_the_loss_is_the_mean_over_every_target_whatever_the_batches(adapter):
    tokens = tokens_of(adapter)
    figures = measure_perplexity(adapter, tokens, 16, 4)
    # The same text in one forward per 16-token window, summed by hand.
    windows = [(tokens.inputs[i : i + 16], tokens.targets[i : i + 16]) for i in range(0, len(tokens.inputs), 16)]
    total = sum(F.cross_entropy(adapter.logits(x.view(1, -1))[0], y, reduction="sum").item() for x, y in windows)
    assert figures.tokens == len(TEXT) - 1
    assert figures.loss == pytest.approx(total / figures.tokens, rel=1e-6)
    assert measure_perplexity(adapter, tokens, 7, 3).loss == pytest.approx(figures.loss, rel=0.02)  # other windows
    assert figures.bits_per_character == pytest.approx(figures.loss / math.log(2))


def test_masked_targets_are_neither_scored_nor_counted(adapter):
    """The seam for chat and completion data: their prompts' targets are IGNORE_INDEX."""
    plain = tokens_of(adapter)
    masked_targets = plain.targets.clone()
    masked_targets[: len(masked_targets) // 2] = IGNORE_INDEX
    masked = ScoringTokens(plain.inputs, masked_targets, plain.source, plain.sha256)
    figures = measure_perplexity(adapter, masked, 16, 4)
    assert figures.tokens == masked.scored == len(plain.targets) - len(plain.targets) // 2
    logits = torch.cat([adapter.logits(x).flatten(0, 1) for x, _ in scoring_batches(plain, 16, 4)])
    scored = masked_targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[scored], masked_targets[scored]).item()
    assert figures.loss == pytest.approx(expected, rel=1e-6)
    everything_masked = ScoringTokens(plain.inputs, torch.full_like(plain.targets, IGNORE_INDEX), "x.txt", "s")
    with pytest.raises(DataError, match="no token to score"):
        measure_perplexity(adapter, everything_masked, 16, 4)


def test_text_too_short_or_foreign_is_a_data_error(adapter):
    with pytest.raises(DataError, match="nothing to predict"):
        tokens_of(adapter, "t")
    with pytest.raises(DataError, match="'Z'"):
        tokens_of(adapter, "the Zoo")

"""trainer/models/generation.py: streamed text, prompts, the token budget, stopping at EOS."""

import pytest
import torch

from trainer.data.char_tokenizer import CharTokenizer
from trainer.errors import UsageError
from trainer.models.generation import TextStream, encode_prompt, generate_text, new_token_budget
from trainer.models.hf_adapter import HFCausalLMAdapter
from trainer.models.sampling import SamplingSettings

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf(tiny_qwen_dir):
    return HFCausalLMAdapter.load(tiny_qwen_dir, "qwen")


def test_a_character_split_over_tokens_is_held_back_until_whole(hf):
    text = "Жили-были € and ☃."
    ids = hf.tokenizer.encode(text).tolist()
    # The byte-level vocabulary splits the non-ASCII characters: some prefixes end in half of one.
    assert any(hf.tokenizer.decode(ids[:k]).endswith("\ufffd") for k in range(1, len(ids)))
    pieces = []
    stream = TextStream(hf.tokenizer, pieces.append)
    for token in ids:
        stream.add(token)
    stream.finish()
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)


def test_prompts_and_budgets():
    chars = CharTokenizer.from_text("abc ")
    assert chars.encode("").tolist() == []  # was a ValueError from torch.frombuffer (sampling_prompt="")
    assert encode_prompt(chars, "").tolist() == [chars.start_id]  # an empty prompt starts somewhere
    with pytest.raises(UsageError, match=r"lacks: 'xz'"):
        encode_prompt(chars, "a zx")
    assert new_token_budget(32, 4, 500) == 28 and new_token_budget(32, 4, 10) == 10
    with pytest.raises(UsageError, match="no room left"):
        new_token_budget(32, 32, 1)


def test_the_text_ends_before_eos_and_says_it_stopped_there(hf):
    head = hf.model.get_output_embeddings()
    bias = torch.zeros(hf.tokenizer.vocab_size)
    bias[hf.tokenizer.eos_id] = 100.0
    head.bias = torch.nn.Parameter(bias)
    try:
        streamed = []
        result = generate_text(hf, hf.tokenizer.encode("The"), 8, SamplingSettings(), 0, on_text=streamed.append)
    finally:
        head.bias = None
    assert result.stopped_at_eos and result.new_tokens == 1 and result.text == "" and streamed == []

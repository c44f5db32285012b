"""chat SOURCE, scripted through stdin: the template applied, the conversation kept, /reset, /exit."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import rehash

pytest.importorskip("transformers")


def chat(lmrunner, registry, source, lines, *options):
    return lmrunner("chat", source, "--registry-dir", registry.root, "--seed", "4", *options, stdin="".join(lines))


def rendered(turns):
    """What the tiny chat model reads: ChatML of the turns, then the assistant's turn opened."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + "<|im_start|>assistant\n"


def generated(lmrunner, source, prompt, seed, *options):
    """The text generate gives for ``prompt``: what a chat reply must be."""
    code, out, err = lmrunner("generate", source, "--prompt", prompt, "--seed", seed, "--json", *options)
    assert code == 0, err
    return json.loads(out)["text"]


def test_each_reply_continues_the_whole_conversation_through_the_template(lmrunner, use_registry):
    lines = ["Hello there\n", "And then?\n", "/exit\n", "Unread\n"]
    code, out, err = chat(lmrunner, use_registry, "tiny-chat", lines, "--max-new-tokens", "8")
    assert code == 0, err
    assert "chat template: the tokenizer's" in err
    # Reply k is what generate gives for the conversation so far, written out by the template, with seed S+k.
    registry = ("--registry-dir", use_registry.root, "--max-new-tokens", "8")
    first = generated(lmrunner, "tiny-chat", rendered([("user", "Hello there")]), "4", *registry)
    kept = rendered([("user", "Hello there"), ("assistant", first), ("user", "And then?")])
    second = generated(lmrunner, "tiny-chat", kept, "5", *registry)
    assert out == f"{first}\n{second}\n"


def test_reset_starts_a_new_conversation_and_commands_are_not_messages(lmrunner, use_registry):
    code, out, err = chat(lmrunner, use_registry, "tiny-chat", ["Hi\n", "/reset\n", "/help\n", "\n", "Hi\n"])
    assert code == 0, err
    reply = generated(lmrunner, "tiny-chat", rendered([("user", "Hi")]), "4", "--registry-dir", use_registry.root)
    assert out == f"{reply}\n{reply}\n"  # a new conversation: the same first reply
    assert "a new conversation" in err and "unknown command /help" in err
    code, kept, _ = chat(lmrunner, use_registry, "tiny-chat", ["Hi\n", "Hi\n"])
    assert kept.startswith(f"{reply}\n") and kept != out  # the second reply saw the first turn


def test_a_model_without_a_template_is_refused_in_one_line(lmrunner, use_registry):
    code, out, err = chat(lmrunner, use_registry, "tiny-qwen", ["Hello\n"])
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: registry model tiny-qwen") and "has no chat template" in line
    assert "--chat-template FILE" in line


def test_a_template_file_gives_a_model_without_one_a_chat(lmrunner, use_registry, tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:")
    code, out, err = chat(lmrunner, use_registry, "tiny-qwen", ["Hello\n"], "--chat-template", template)
    assert code == 0 and f"chat template: --chat-template {template}" in err
    registry = ("--registry-dir", use_registry.root)
    assert out == generated(lmrunner, "tiny-qwen", "user: Hello\nassistant:", "4", *registry) + "\n"


def test_the_run_configs_chat_template_comes_before_the_tokenizers(lmrunner, hf_run, tmp_path):
    checkpoint = tmp_path / "step-00000002"
    shutil.copytree(hf_run.checkpoint, checkpoint)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    state["config"]["chat_template"] = "{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}A:"
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    rehash(checkpoint)
    code, out, err = lmrunner("chat", checkpoint, "--seed", "2", stdin="Why?\n")
    assert code == 0 and "chat template: the chat_template of the run's config" in err
    assert out == generated(lmrunner, checkpoint, "Q: Why?\nA:", "2") + "\n"


def test_the_character_model_chats_with_a_template_and_names_characters_it_lacks(
    lmrunner, use_registry, char_run, tmp_path
):
    template = tmp_path / "chars.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    lines = ["The end\n", "\u20acuro\n", "Then\n"]
    options = ("--chat-template", template, "--max-new-tokens", "5")
    code, out, err = chat(lmrunner, use_registry, "char-model", lines, *options)
    assert code == 0, err
    assert "error: the conversation has characters the model's vocabulary lacks: '\u20ac'" in err
    registry = ("--registry-dir", use_registry.root, "--max-new-tokens", "5")
    first = generated(lmrunner, "char-model", "The end\n", "4", *registry)
    second = generated(lmrunner, "char-model", f"The end\n{first}\nThen\n", "5", *registry)  # the failed turn left out
    assert out == f"{first}\n{second}\n"

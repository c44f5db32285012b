"""Chat: a conversation written out through a chat template, and the model's reply to it.

The template is, first found first: the ``--chat-template`` file, the ``chat_template`` of the
config the model was trained with (a Jinja template, or the path of a file holding one), or
the tokenizer's own. A model with none is refused: without a template, a model has no way of
telling whose turn it is, and generate is the command for plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.data.tokenizers import HFTokenizer
from trainer.errors import UsageError, first_line
from trainer.models.adapter import ModelAdapter
from trainer.models.generation import Generated, encode_prompt, generate_text, new_token_budget
from trainer.models.sampling import SamplingSettings


@dataclass(frozen=True)
class ChatTemplate:
    text: str  # Jinja, as transformers' chat templates are written
    origin: str  # where it came from, for the user


def find_chat_template(tokenizer, run_config: dict[str, Any], override: Path | None, model: str) -> ChatTemplate:
    if override is not None:
        return ChatTemplate(_read(override, "--chat-template"), f"--chat-template {override}")
    setting = run_config.get("chat_template")
    if setting:
        return ChatTemplate(_template_or_file(setting), "the chat_template of the run's config")
    own = getattr(getattr(tokenizer, "tokenizer", None), "chat_template", None)
    if isinstance(own, dict):  # several named templates: the one transformers uses by default
        own = own.get("default")
    if isinstance(own, str) and own:
        return ChatTemplate(own, "the tokenizer's")
    raise UsageError(
        f"{model} has no chat template: its tokenizer has none, and its run config sets no chat_template",
        hint="give one with --chat-template FILE (a Jinja chat template, e.g. the model family's), "
        "or use generate for plain text",
    )


def _template_or_file(setting: str) -> str:
    """A config's chat_template: the template itself, or the path of a file holding one."""
    if "{{" in setting or "{%" in setting:
        return setting
    return _read(Path(setting), "chat_template")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else (err.strerror or str(err))
        raise UsageError(f"{what} {path}: {why}", hint="give a UTF-8 file holding a Jinja chat template") from err


def render_conversation(tokenizer, template: ChatTemplate, messages: list[dict[str, str]]) -> str:
    """The conversation as the text the model reads, ending where the assistant's turn begins."""
    from jinja2 import TemplateError

    try:
        if isinstance(tokenizer, HFTokenizer):  # gives the template its special tokens (bos_token, ...)
            return tokenizer.tokenizer.apply_chat_template(
                messages, chat_template=template.text, add_generation_prompt=True, tokenize=False
            )
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], chat_template=template.text, add_generation_prompt=True)
        return rendered[0]
    except TemplateError as err:
        raise UsageError(
            f"the chat template ({template.origin}) failed: {first_line(err)}", hint="fix the template"
        ) from err


class Conversation:
    """The messages so far and the next reply. Reply k of a conversation (from 0) is drawn with
    seed S + k: the same lines give the same replies, and a reset conversation is a new one."""

    def __init__(
        self,
        adapter: ModelAdapter,
        template: ChatTemplate,
        settings: SamplingSettings,
        max_new_tokens: int,
        seed: int,
        system: str | None = None,
    ):
        self.adapter = adapter
        self.template = template
        self.settings = settings
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.replies = 0

    def prompt_for(self, user_text: str) -> str:
        """The text the model continues for the reply to ``user_text``."""
        return render_conversation(
            self.adapter.tokenizer, self.template, [*self.messages, {"role": "user", "content": user_text}]
        )

    def reply(self, user_text: str, on_text: Callable[[str], None] | None = None) -> Generated:
        """The model's reply; the turn joins the conversation only once the reply is complete."""
        ids = encode_prompt(self.adapter.tokenizer, self.prompt_for(user_text), what="the conversation")
        budget = new_token_budget(
            self.adapter.max_positions, len(ids), self.max_new_tokens, "the conversation", "/reset to start over"
        )
        result = generate_text(self.adapter, ids, budget, self.settings, self.seed + self.replies, on_text)
        self.messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": result.text}]
        self.replies += 1
        return result

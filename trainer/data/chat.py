"""Chat examples: the tokenizer's own chat template, and which tokens are the assistant's.

A conversation is rendered with ``apply_chat_template``, the way the model will see it when
it is used. Which tokens the loss counts is found from the template itself: for each
assistant turn, the conversation up to that turn rendered with the generation prompt (it
ends with the assistant's header) is a prefix of the conversation rendered through the
turn; the tokens in between are the assistant's reply and the template's end-of-turn
marker. This needs no special markers in the template (few templates have
``{% generation %}``), only that rendering a longer conversation extends a shorter one,
which holds for the chat templates in use; a template for which it does not hold is
refused with one line rather than trained on with a wrong mask.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from trainer.errors import ConfigError, DataError

ROLES = ("system", "user", "assistant", "tool")


def resolve_template(setting: str | None) -> str | None:
    """The ``chat_template`` setting: a file holding a Jinja template, or the template itself."""
    if setting is None:
        return None
    path = Path(setting)
    if len(setting) < 4096 and "{" not in setting and path.is_file():
        return path.read_text(encoding="utf-8")
    if "{" not in setting:
        raise ConfigError(
            f"chat_template={setting!r} is neither a file nor a Jinja template",
            key="chat_template",
            hint="give the path of a .jinja file, or the template itself ({% for message in messages %}...)",
        )
    return setting


def template_sha256(template: str | None) -> str | None:
    return None if template is None else hashlib.sha256(template.encode()).hexdigest()


def require_template(tokenizer, label: str) -> None:
    """Chat data needs a template: the tokenizer's own, or one set with chat_template."""
    if getattr(getattr(tokenizer, "tokenizer", None), "chat_template", None) is None:
        raise ConfigError(
            f"the data in {label} is chat (messages), and the tokenizer has no chat template",
            key="chat_template",
            hint="set chat_template to a Jinja template (or a file with one), or use a model whose tokenizer has one",
        )


def chat_example(tokenizer, messages: list[dict], train_on_prompt: bool, label: str) -> tuple[list[int], list[int]]:
    """A conversation's token ids and its mask: 1 for the assistant's tokens and the EOS
    (every token with ``train_on_prompt``). ``label`` names the data in errors."""
    turns = _checked(messages, label)
    full = _render(tokenizer, turns, generation_prompt=False)
    mask = [1 if train_on_prompt else 0] * len(full)
    for index, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, turns[:index], generation_prompt=True) if index else []
        through = _render(tokenizer, turns[: index + 1], generation_prompt=False)
        if through[: len(before)] != before or full[: len(through)] != through:
            raise ConfigError(
                "the chat template renders a conversation differently from its beginning, so the "
                "assistant's tokens cannot be told apart",
                key="chat_template",
                hint="use a template whose output for a longer conversation extends the shorter one's",
            )
        mask[len(before) : len(through)] = [1] * (len(through) - len(before))
    eos = tokenizer.eos_id
    if eos is not None and (not full or full[-1] != eos):
        full, mask = [*full, eos], [*mask, 1]  # an example ends with EOS, trained on: the model learns to stop
    return full, mask


def _render(tokenizer, turns: list[dict], generation_prompt: bool) -> list[int]:
    rendered = tokenizer.tokenizer.apply_chat_template(
        turns, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
    )
    return list(rendered["input_ids"])


def _checked(messages, label: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError("a chat example has no messages (an empty or missing list)", path=label)
    turns = []
    for turn in messages:
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ROLES:
            raise DataError(
                f"a chat turn has the role {role!r}; the roles are {', '.join(ROLES)}",
                path=label,
                hint="fix that turn, or map your roles onto these before training",
            )
        turns.append({"role": role, "content": "" if turn.get("content") is None else str(turn["content"])})
    return turns

"""Data formats: which one a table holds, and how an example of each becomes tokens and a mask.

- ``text``: a ``text`` column; each row is a document, followed by EOS.
- ``completion``: ``prompt`` + ``completion`` columns, or the Alpaca layout (``instruction``,
  optional ``input``, ``output``), whose prompt is the instruction and the input, each
  followed by a blank line. The example is the prompt's tokens, the completion's and EOS.
- ``chat``: a ``messages`` column of ``{role, content}`` turns, rendered with the tokenizer's
  chat template (trainer/data/chat.py), EOS appended unless the template ends with it.

``data_columns`` renames: ``{prompt: question, completion: answer}`` reads the prompt from
the column ``question``. With ``train_on_prompt`` false (the default) only completion and
assistant tokens, and the EOS, are targets of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.data.chat import chat_example
from trainer.errors import DataError

# The columns each format reads, by their canonical names (data_columns renames them).
_NEEDS = {"chat": ("messages",), "completion": ("prompt", "completion"), "text": ("text",)}
_ALPACA = ("instruction", "output")


@dataclass(frozen=True)
class FormatChoice:
    format: str  # text | completion | chat
    columns: dict[str, str]  # canonical name -> the table's column
    reason: str  # how it was decided, for the console and run_start


def choose_format(requested: str, present: list[str], renames: dict[str, str], label: str) -> FormatChoice:
    """The format of a table with columns ``present``: the one ``requested``, or, for auto,
    the first whose columns are all there (chat, completion, Alpaca, text)."""
    column = {name: renames.get(name, name) for name in ("text", "prompt", "completion", "messages", *_ALPACA, "input")}
    has = lambda *names: all(column[n] in present for n in names)  # noqa: E731
    if requested == "auto":
        for candidate in ("chat", "completion"):
            if has(*_NEEDS[candidate]):
                return FormatChoice(candidate, column, f"auto: found the columns {_listed(candidate, column)}")
        if has(*_ALPACA):
            return FormatChoice("completion", column, "auto: found the Alpaca columns instruction and output")
        if has("text"):
            return FormatChoice("text", column, f"auto: found the column {column['text']}")
        raise DataError(
            f"cannot tell the data format from the columns {', '.join(present)}",
            path=label,
            hint="name the columns with data_columns, e.g. data_columns={prompt: question, completion: answer}, "
            "or set data_format (text: a text column; completion: prompt and completion; chat: messages)",
        )
    if requested == "completion" and not has(*_NEEDS["completion"]) and has(*_ALPACA):
        return FormatChoice("completion", column, "data_format: completion (the Alpaca columns)")
    missing = [name for name in _NEEDS[requested] if column[name] not in present]
    if missing:
        raise DataError(
            f"data_format={requested} needs the column {column[missing[0]]!r}, and the data has {', '.join(present)}",
            path=label,
            hint=f"map yours onto it: data_columns={{{missing[0]}: YOUR_COLUMN}}",
        )
    return FormatChoice(requested, column, f"data_format: {requested}")


def _listed(fmt: str, column: dict[str, str]) -> str:
    return " and ".join(column[name] for name in _NEEDS[fmt])


@dataclass(frozen=True)
class Encoder:
    """Turns rows of one format into (ids, mask) pairs; picklable, for worker processes."""

    choice: FormatChoice
    tokenizer: object  # an HFTokenizer (formats other than text need one)
    train_on_prompt: bool
    label: str  # the data, as errors name it

    def encode_rows(self, rows: dict[str, list]) -> dict[str, list]:
        """A batch of rows (column -> values) to their ``ids`` and ``mask`` lists."""
        fmt, column = self.choice.format, self.choice.columns
        if fmt == "chat":
            pairs = [
                chat_example(self.tokenizer, messages, self.train_on_prompt, self.label)
                for messages in rows[column["messages"]]
            ]
        elif fmt == "completion":
            prompts, completions = self._prompts_and_completions(rows)
            pairs = self._completions(prompts, completions)
        else:
            pairs = self._texts(rows[column["text"]])
        return {"ids": [ids for ids, _ in pairs], "mask": [mask for _, mask in pairs]}

    def _prompts_and_completions(self, rows: dict[str, list]) -> tuple[list[str], list[str]]:
        column = self.choice.columns
        if column["prompt"] in rows and column["completion"] in rows:
            return _strings(rows[column["prompt"]]), _strings(rows[column["completion"]])
        inputs = rows.get(column["input"]) or [""] * len(rows[column["instruction"]])
        prompts = [
            f"{instruction}\n\n{extra}\n\n" if extra else f"{instruction}\n\n"
            for instruction, extra in zip(_strings(rows[column["instruction"]]), _strings(inputs), strict=True)
        ]
        return prompts, _strings(rows[column["output"]])

    def _completions(self, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
        tok = self.tokenizer
        start, eos = tok.start_ids, [tok.eos_id]
        prompt_flag = 1 if self.train_on_prompt else 0
        pairs = []
        for prompt, completion in zip(tok.encode_batch(prompts), tok.encode_batch(completions), strict=True):
            head = start + prompt
            pairs.append((head + completion + eos, [prompt_flag] * len(head) + [1] * (len(completion) + 1)))
        return pairs

    def _texts(self, texts: list[str]) -> list[tuple[list[int], None]]:
        tok = self.tokenizer
        eos = [] if tok.eos_id is None else [tok.eos_id]  # a character vocabulary has no EOS
        return [([*tok.start_ids, *ids, *eos], None) for ids in tok.encode_batch(_strings(texts))]


def _strings(values: list) -> list[str]:
    return ["" if value is None else str(value) for value in values]

"""chat SOURCE: talk to a model that has a chat template, one line per message.

Each line read (from the terminal, or from stdin when it is not one: a script) is a user
message; the reply streams to stdout and the conversation is kept, so the next reply sees
every turn before it. ``/reset`` starts a new conversation, ``/exit`` or the end of the input
ends the session. A model with no chat template is refused before its weights load.
argparse only at module level: --help imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.model_options import (
    add_sampling_arguments,
    add_source_arguments,
    emit,
    load_model,
    resolve,
    sampling_settings,
    say,
    seed_or_drawn,
)
from trainer.errors import UsageError

RESET, EXIT = "/reset", "/exit"


def build_parser() -> argparse.ArgumentParser:
    prog = program_name()
    parser = OneLineArgumentParser(
        prog=f"{prog} chat",
        description="Chat with a model that has a chat template: one line per message, replies streamed "
        f"to stdout; {RESET} starts over, {EXIT} (or the end of input) ends.",
        epilog=f"""examples:
  {prog} chat qwen-0.5b-instruct
  {prog} chat outputs/DATE/TIME --chat-template chatml.jinja --system "Answer briefly."
  printf 'Hello\\nAnd then?\\n' | {prog} chat qwen-0.5b-instruct --seed 1     a scripted conversation

The template is the --chat-template file, else the chat_template of the config the model was
trained with, else the tokenizer's own. Reply k of a conversation is drawn with seed S+k.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    parser.add_argument("--chat-template", type=Path, metavar="FILE", help="a Jinja chat template to use instead")
    parser.add_argument("--system", metavar="TEXT", help="a system message that opens every conversation")
    add_sampling_arguments(parser, max_new_tokens=256)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    source = resolve(args)
    from trainer.data.tokenizers import load_tokenizer
    from trainer.models.chat import Conversation, find_chat_template

    tokenizer = load_tokenizer(source.directory)
    template = find_chat_template(tokenizer, source.run_config, args.chat_template, source.describe())
    adapter = load_model(args, source, tokenizer)
    seed = seed_or_drawn(args.seed)
    conversation = Conversation(adapter, template, sampling_settings(args), args.max_new_tokens, seed, args.system)
    say(f"chat template: {template.origin}; {RESET} starts over, {EXIT} ends")
    interactive = sys.stdin.isatty()
    while (line := read_message(interactive)) is not None:
        command = line.strip()
        if command == EXIT:
            break
        if command == RESET:
            conversation.reset()
            say("a new conversation")
        elif command.startswith("/") and " " not in command:
            say(f"unknown command {command}: {RESET} starts over, {EXIT} ends")
        elif command:
            reply(conversation, line)
    return 0


def read_message(interactive: bool) -> str | None:
    """The next line the user wrote, or None at the end of the input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line.removesuffix("\n") if line else None


def reply(conversation, line: str) -> None:
    try:
        conversation.reply(line, on_text=emit)
    except UsageError as err:  # this message cannot be answered (too long, foreign characters): the chat goes on
        say(f"error: {err.line()}")
        return
    emit("\n")

"""argparse that reports a bad command line as one line (a UsageError), not a usage block."""

from __future__ import annotations

import argparse
import re

from trainer.errors import UsageError, did_you_mean


class OneLineArgumentParser(argparse.ArgumentParser):
    help_option = "--help"  # what the hint of an error points at

    def error(self, message: str):  # argparse's hook: it would print the usage and exit 2
        raise usage_error(self, message, self.help_option)


def usage_error(
    parser: argparse.ArgumentParser, message: str, help_option: str = "--help", also_known: tuple[str, ...] = ()
) -> UsageError:
    """``message`` from argparse as a UsageError, with the nearest option for a misspelt one
    (among the parser's own and ``also_known``, the other door's)."""
    unknown = re.match(r"unrecognized arguments: (\S+)", message)
    if unknown:
        message += did_you_mean(unknown.group(1).split("=", 1)[0], [*_options(parser), *also_known])
    return UsageError(message, hint=f"see {parser.prog} {help_option}")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its subcommands (argparse reports a subcommand's
    unknown option from the top-level parser)."""
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found += _options(subparser)
    return found

"""What the commands that use a model share: SOURCE and its options, the sampling options,
their checks, and loading the model with a line on stderr saying what was loaded.

argparse and the standard library only at module level: ``generate --help`` and the others
must answer without importing torch. Torch comes in with ``load_model``, once the command
line is known to be good.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import Any

SOURCE_HELP = (
    "a checkpoint directory (checkpoints/step-*), a run directory (its newest checkpoint that verifies) "
    "or a registry model name (list-models)"
)


def positive_int(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def probability_mass(text: str) -> float:
    """top-p: a share of the probability, in (0, 1]."""
    value = _number(text, float, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def seed_value(text: str) -> int:
    value = _number(text, int, "an integer")
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be 0 to 2^63-1, got {text}")
    return value


def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="the weights' precision (default: fp32)"
    )
    add_registry_dir_argument(parser)


def add_registry_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="registry root (default: $LMRUNNER_HOME, else ./models)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=max_new_tokens,
        metavar="N",
        help=f"tokens to generate at most (default: {max_new_tokens}; capped by the model's positions)",
    )
    parser.add_argument(
        "--temperature", type=non_negative_float, default=0.8, metavar="T", help="0 is greedy (default: 0.8)"
    )
    parser.add_argument("--top-k", type=positive_int, metavar="K", help="draw from the K most likely tokens only")
    parser.add_argument(
        "--top-p",
        type=probability_mass,
        metavar="P",
        help="draw from the smallest set of most likely tokens holding probability P, in (0, 1]",
    )
    parser.add_argument(
        "--seed", type=seed_value, metavar="S", help="the same seed gives the same text (default: drawn, and printed)"
    )


def seed_or_drawn(seed: int | None) -> int:
    """The seed given, or a new one, said on stderr so that the output can be repeated."""
    if seed is not None:
        return seed
    drawn = secrets.randbelow(2**31)
    say(f"seed {drawn} (drawn; --seed {drawn} repeats this)")
    return drawn


def sampling_settings(args: argparse.Namespace):
    from trainer.models.sampling import SamplingSettings

    return SamplingSettings(args.temperature, args.top_k, args.top_p)


def resolve(args: argparse.Namespace):
    """SOURCE, found and checked (a damaged checkpoint is refused, naming its file)."""
    from trainer.cli.signals import import_torch

    import_torch()
    from registry.store import Registry, default_root
    from trainer.models.resolve import resolve_source

    source = resolve_source(args.source, Registry(args.registry_dir or default_root()))
    for damaged in source.passed_over:
        say(f"warning: passed over {damaged.path} ({damaged.reason}); using {source.directory.name}")
    return source


def load_model(args: argparse.Namespace, source, tokenizer=None):
    """The model behind ``source`` on --device in --precision; says on stderr what it loaded."""
    from trainer.models.resolve import load_for_use
    from trainer.training.device import resolve_device

    device = resolve_device(args.device)
    adapter = load_for_use(source, device, args.precision, tokenizer)
    say(f"loaded {source.describe()} on {device}, {args.precision}")
    return adapter


def emit(text: str) -> None:
    """What the command produces: stdout, flushed at once, so that text streams as it comes."""
    sys.stdout.write(text)
    sys.stdout.flush()


def say(text: str) -> None:
    """A diagnostic: stderr, so that stdout holds only what the command produces."""
    print(text, file=sys.stderr, flush=True)

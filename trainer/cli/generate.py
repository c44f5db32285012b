"""generate SOURCE: text from a checkpoint, a run directory or a registry model.

The text streams to stdout as it is produced (the prompt first); every diagnostic goes to
stderr, so ``generate ... > out.txt`` holds the text alone. ``--json`` prints one object per
sample instead. Sample i (from 0) is drawn with seed S + i, so any one of them can be drawn
again alone with ``--seed S+i``. argparse only at module level: --help imports no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.model_options import (
    add_sampling_arguments,
    add_source_arguments,
    emit,
    load_model,
    positive_int,
    resolve,
    sampling_settings,
    say,
    seed_or_drawn,
)
from trainer.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    prog = program_name()
    parser = OneLineArgumentParser(
        prog=f"{prog} generate",
        description="Generate text from a checkpoint, a run directory or a registry model. The text streams "
        "to stdout; diagnostics go to stderr.",
        epilog=f"""examples:
  {prog} generate outputs/DATE/TIME --prompt "The " --max-new-tokens 200 --seed 1
  echo "def main(" | {prog} generate outputs/DATE/TIME/checkpoints/step-00001000 --temperature 0.5
  {prog} generate qwen-0.5b-base --prompt-file prompt.txt --top-p 0.9 --num-samples 3 --json

The prompt is --prompt, else --prompt-file, else stdin when it is not a terminal (one trailing
newline is dropped from a file or stdin); with none, generation starts from the start token.
The same --seed gives the same text; sample i of --num-samples is drawn with seed S+i.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="the text to continue")
    prompt.add_argument("--prompt-file", type=Path, metavar="FILE", help="a UTF-8 file holding the prompt")
    add_sampling_arguments(parser, max_new_tokens=200)
    parser.add_argument("--num-samples", type=positive_int, default=1, metavar="N", help="samples to draw (default: 1)")
    parser.add_argument("--no-stream", action="store_true", help="print each sample when it is complete")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per sample (prompt, text, token counts, tokens/s, seed, source resolved)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    prompt = read_prompt(args)  # before anything loads: a bad prompt file fails at once
    source = resolve(args)
    adapter = load_model(args, source)
    seed = seed_or_drawn(args.seed)
    from trainer.models.generation import encode_prompt, generate_text, new_token_budget

    prompt_ids = encode_prompt(adapter.tokenizer, prompt)
    budget = new_token_budget(adapter.max_positions, len(prompt_ids), args.max_new_tokens)
    if budget < args.max_new_tokens:
        say(
            f"--max-new-tokens {args.max_new_tokens} capped at {budget}: the model has {adapter.max_positions} "
            f"positions and the prompt takes {len(prompt_ids)}"
        )
    settings = sampling_settings(args)
    stream = not (args.json or args.no_stream)
    for index in range(args.num_samples):
        if stream:
            emit(prompt)
        result = generate_text(adapter, prompt_ids, budget, settings, seed + index, on_text=emit if stream else None)
        if args.json:
            print(json.dumps(_record(index, prompt, len(prompt_ids), result, seed + index, source), ensure_ascii=False))
        else:
            emit("\n" if stream else prompt + result.text + "\n")  # streamed: the text is out already
        ending = ", stopped at end of text" if result.stopped_at_eos else ""
        say(
            f"sample {index + 1}/{args.num_samples}: seed {seed + index}, {result.new_tokens} new tokens in "
            f"{result.seconds:.2f} s ({result.tokens_per_s:.1f} tokens/s){ending}"
        )
    return 0


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file is not None:
        try:
            return _one_newline_less(args.prompt_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            why = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else (err.strerror or str(err))
            raise UsageError(f"--prompt-file {args.prompt_file}: {why}", hint="give a UTF-8 text file") from err
    if not sys.stdin.isatty():
        return _one_newline_less(sys.stdin.read())
    say("no prompt (--prompt, --prompt-file or stdin): generating from the start token")
    return ""


def _one_newline_less(text: str) -> str:
    """What ``echo`` and editors add at the end is not part of the prompt."""
    return text[:-1] if text.endswith("\n") else text


def _record(index: int, prompt: str, prompt_tokens: int, result, seed: int, source) -> dict:
    return {
        "sample": index + 1,
        "prompt": prompt,
        "text": result.text,
        "prompt_tokens": prompt_tokens,
        "new_tokens": result.new_tokens,
        "seconds": round(result.seconds, 4),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "stopped_at_eos": result.stopped_at_eos,
        "seed": seed,
        "source": source.given,
        "source_kind": source.kind,
        "source_resolved": str(source.directory),
    }

"""evaluate SOURCE: a model's loss on a text file, or its scores on lm-eval tasks.

``--data FILE``: mean loss, perplexity (and bits per character for the character model)
over the whole file in non-overlapping windows, with the count of tokens scored; the same
figures on every run. ``--lm-eval TASKS``: lm-evaluation-harness tasks, for Hugging Face
models (the ``eval`` extra). argparse only at module level: --help imports no torch.
"""

from __future__ import annotations

import argparse
import json

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.model_options import add_source_arguments, load_model, positive_int, resolve, say
from trainer.errors import UsageError

# A model with many positions (Qwen's 32,768) is scored in windows of at most this many
# tokens unless --max-seq-len says otherwise: whole-context windows would need GBs of memory.
DEFAULT_MAX_WINDOW = 1024


def build_parser() -> argparse.ArgumentParser:
    prog = program_name()
    parser = OneLineArgumentParser(
        prog=f"{prog} evaluate",
        description="A model's loss and perplexity on a text file, or its scores on lm-eval tasks.",
        epilog=f"""examples:
  {prog} evaluate outputs/DATE/TIME --data held-out.txt
  {prog} evaluate qwen-0.5b-base --data held-out.txt --max-seq-len 512 --json
  {prog} evaluate qwen-0.5b-base --lm-eval hellaswag,arc_easy --limit 100
  {prog} evaluate qwen-0.5b-base --lm-eval my-task.yaml        a task file of your own

--data scores every token of the file after the first, once, in non-overlapping windows of
--max-seq-len tokens (default: the length the model was trained with, else its positions, at
most {DEFAULT_MAX_WINDOW}). Loss is in nats per token; bits per character are given for the
character model. The same settings give the same figures.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--data",
        metavar="PATH",
        help="data to measure the loss on, in any format training reads (text; chat or completion examples: "
        "their responses)",
    )
    what.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="comma-separated lm-eval task names or task YAML files (Hugging Face models; pip install -e '.[eval]')",
    )
    parser.add_argument("--max-seq-len", type=positive_int, metavar="N", help="tokens per window (--data)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N", help="windows per forward (default: 8)"
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="examples per lm-eval task (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.lm_eval is None:
        raise UsageError("--limit applies to --lm-eval tasks", hint="--data scores the whole file")
    source = resolve(args)
    if args.data is not None:
        from trainer.config.schema import TrainingConfig
        from trainer.data.prepare import check_data_source

        check_data_source(TrainingConfig(data_path=args.data))  # bad data fails before the model loads
        adapter = load_model(args, source)
        figures = _perplexity(args, source, adapter)
        _report(args, source, figures, _perplexity_lines(figures))
    else:
        adapter = load_model(args, source)
        from trainer.models.harness import run_lm_eval

        tasks = [task.strip() for task in args.lm_eval.split(",") if task.strip()]
        scores = run_lm_eval(adapter, source.describe(), tasks, args.limit, args.batch_size)
        _report(args, source, {"lm_eval": scores}, _lm_eval_lines(scores))
    return 0


def _perplexity(args: argparse.Namespace, source, adapter) -> dict:
    from trainer.data.held_out import held_out_tokens
    from trainer.models.perplexity import measure_perplexity

    positions = adapter.max_positions
    window = args.max_seq_len or min(positions, source.run_config.get("max_seq_len") or DEFAULT_MAX_WINDOW)
    if window > positions:
        say(f"--max-seq-len {window} capped at {positions}: the model has {positions} positions")
        window = positions
    # Data in any format training reads; chat and completion data are scored on their responses.
    tokens = held_out_tokens(args.data, adapter.tokenizer, source.run_config)
    measured = measure_perplexity(adapter, tokens, window, args.batch_size)
    return {
        "data": tokens.source,
        "data_sha256": tokens.sha256,
        **measured.to_dict(),
        "max_seq_len": window,
        "batch_size": args.batch_size,
    }


def _perplexity_lines(figures: dict) -> list[str]:
    lines = [
        f"{figures['data']}: {figures['tokens']:,} tokens scored in {figures['windows']:,} windows "
        f"of up to {figures['max_seq_len']} tokens",
        f"  loss         {figures['loss']:.4f} nats/token",
        f"  perplexity   {figures['perplexity']:.3f}",
    ]
    if "bits_per_character" in figures:
        lines.append(f"  bits/char    {figures['bits_per_character']:.4f}")
    return lines


def _lm_eval_lines(scores: dict) -> list[str]:
    lines = [f"lm-eval: {', '.join(scores['tasks'])}" + (f" (limit {scores['limit']})" if scores["limit"] else "")]
    for task, metrics in scores["results"].items():
        for key, value in metrics.items():
            name, _, kind = key.partition(",")
            if not kind or "_stderr" in name or not isinstance(value, (int, float)):
                continue  # alias, sample counts, and the standard errors shown beside their metric
            error = metrics.get(f"{name}_stderr,{kind}")
            spread = f" ± {error:.4f}" if isinstance(error, (int, float)) else ""
            label = name if kind == "none" else f"{name} ({kind})"
            lines.append(f"  {task:<24} {label:<20} {value:.4f}{spread}")
    return lines


def _report(args: argparse.Namespace, source, figures: dict, lines: list[str]) -> None:
    if args.json:
        record = {"source": source.given, "source_kind": source.kind, "source_resolved": str(source.directory)}
        print(json.dumps({**record, "precision": args.precision, **figures}, default=str))
    else:
        print("\n".join(lines))

"""export-model SOURCE OUT_DIR: a standalone Hugging Face folder (trainer/models/export.py).

argparse only at module level: --help imports no torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.model_options import SOURCE_HELP, add_registry_dir_argument, resolve, say


def build_parser() -> argparse.ArgumentParser:
    prog = program_name()
    parser = OneLineArgumentParser(
        prog=f"{prog} export-model",
        description="Write a checkpoint or a registry model as a Hugging Face folder that transformers loads "
        "without lmrunner.",
        epilog=f"""examples:
  {prog} export-model my-lora exports/my-model --merge --dtype bf16
  {prog} export-model outputs/DATE/TIME exports/my-finetune
  {prog} export-model outputs/DATE/TIME/checkpoints/step-00000500 exports/adapter

The folder holds config.json, model.safetensors, the tokenizer and a model card naming the Hub
model it descends from (base_model): AutoModelForCausalLM.from_pretrained(OUT_DIR) loads it.
A LoRA adapter needs --merge to become standalone weights; without it, the adapter is exported
as an adapter (peft's adapter_config.json and adapter_model.safetensors), which peft loads on
its base. OUT_DIR appears whole or not at all; an existing one is replaced only with --force.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the folder to write (new or empty)")
    parser.add_argument("--merge", action="store_true", help="fold a LoRA adapter into the weights")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="the precision of the weights written (default: fp32, as lmrunner trains; bf16 halves the size)",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR when it is not empty")
    add_registry_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the export")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    source = resolve(args)
    from trainer.models.export import export_model

    result = export_model(source, args.out_dir, merge=args.merge, dtype=args.dtype, force=args.force)
    for note in result.notes:
        say(f"note: {note}")
    if args.json:
        print(
            json.dumps(
                {
                    "out_dir": str(result.directory),
                    "kind": result.kind,
                    "dtype": result.dtype,
                    "files": result.files,
                    "bytes": result.bytes,
                    "source": source.describe(),
                    "notes": result.notes,
                }
            )
        )
    else:
        print(
            f"exported {source.describe()} as {'an' if result.kind[0] in 'aeiou' else 'a'} {result.kind} ({result.dtype}, {result.bytes / 1e6:.1f} MB) "
            f"to {result.directory}"
        )
    return 0

"""The registry subcommands: import-model, list-models, model-info, delete-model,
validate-registry, register-model. Each handler prints for people (or JSON with --json) and
returns an exit code; errors are raised typed and formatted once (trainer/cli/errors.py).

Nothing here imports torch or transformers at module level: list-models and model-info answer
at once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from registry.store import Registry, default_root
from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.help import program_name
from trainer.cli.tables import short_count, table
from trainer.errors import ExitCode, RegistryError, UsageError

SUBCOMMANDS = ("import-model", "list-models", "model-info", "delete-model", "validate-registry", "register-model")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=program_name(), description="The local model registry.")
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument(
        "--registry-dir", type=Path, default=None, help="registry root (default: $LMRUNNER_HOME, else ./models)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import-model", parents=[root], help="import from the Hugging Face Hub or a local directory")
    p.add_argument("source", help="a Hub repo id (Qwen/Qwen2.5-0.5B) or a directory in Hugging Face layout")
    p.add_argument("--name", help="registry name (default: the repo or directory name, lower-cased)")
    p.add_argument("--revision", help="branch, tag or commit sha on the Hub (default: main)")
    p.add_argument("--force", action="store_true", help="replace a model of the same name")
    p.add_argument("--trust-remote-code", action="store_true", help="accept models whose config needs custom code")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickle (.bin) weights when no safetensors exist")

    p = sub.add_parser("list-models", parents=[root], help="list the registered models")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")

    p = sub.add_parser("model-info", parents=[root], help="every field, the lineage and a file check of one model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("delete-model", parents=[root], help="delete a model and its files")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="delete even though fine-tunes of it are registered")

    p = sub.add_parser("validate-registry", parents=[root], help="check every entry and file; exit 5 on problems")
    p.add_argument("--quick", action="store_true", help="check sizes only, skip sha256 hashing")

    p = sub.add_parser("register-model", parents=[root], help="register a training checkpoint as a model")
    p.add_argument("checkpoint", type=Path, help="a checkpoints/step-* directory")
    p.add_argument("--name", required=True, help="registry name for it")
    p.add_argument("--force", action="store_true", help="replace a model of the same name")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    registry = Registry(args.registry_dir or default_root())
    handler = {
        "import-model": import_model,
        "list-models": list_models,
        "model-info": model_info,
        "delete-model": delete_model,
        "validate-registry": validate,
        "register-model": register_model,
    }[args.command]
    return handler(registry, args)


def import_model(registry: Registry, args: argparse.Namespace) -> int:
    from registry.hub import import_model as do_import

    entry = do_import(
        registry,
        args.source,
        name=args.name,
        revision=args.revision,
        force=args.force,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    print(
        f"imported '{entry.name}' ({entry.architecture_type}, {short_count(entry.num_parameters)} parameters, "
        f"{_size(entry.disk_size_bytes)}) into {registry.model_dir(entry)}"
    )
    return 0


def register_model(registry: Registry, args: argparse.Namespace) -> int:
    from trainer.models.register import register_checkpoint

    entry = register_checkpoint(registry, args.checkpoint, args.name, force=args.force)
    parent = f", fine-tuned from {entry.fine_tuned_from}" if entry.fine_tuned_from else ""
    print(f"registered '{entry.name}' from {args.checkpoint} (step {entry.step}{parent})")
    return 0


def list_models(registry: Registry, args: argparse.Namespace) -> int:
    entries = registry.entries()
    if args.json:
        print(json.dumps([e.to_dict() for _, e in sorted(entries.items())], indent=2))
        return 0
    if not entries:
        print(
            f"no models in {registry.root} yet; import one with: "
            f"{program_name()} import-model Qwen/Qwen2.5-0.5B --name qwen-0.5b-base"
        )
        return 0
    header = ("name", "architecture", "parameters", "size", "source", "fine_tuned_from", "created")
    rows = [header] + [
        (
            e.name,
            e.architecture_type,
            short_count(e.num_parameters),
            _size(e.disk_size_bytes),
            e.model_id or e.source,
            e.fine_tuned_from or "-",
            e.created_at[:10],
        )
        for _, e in sorted(entries.items())
    ]
    print(table(rows))
    return 0


def model_info(registry: Registry, args: argparse.Namespace) -> int:
    from registry.manage import check_entry

    entry = registry.get(args.name)
    problems = check_entry(registry, entry, registry.entries(), quick=False)
    lineage, children = registry.lineage(entry.name), registry.children(entry.name)
    if args.json:
        print(json.dumps({**entry.to_dict(), "lineage": lineage, "children": children, "problems": problems}, indent=2))
        return ExitCode.REGISTRY if problems else ExitCode.OK
    for key, value in entry.to_dict().items():
        if key != "files":
            print(f"{key:>18}: {value}")
    print(f"{'lineage':>18}: {' -> '.join(lineage)}")
    print(f"{'children':>18}: {', '.join(children) or '-'}")
    print(f"{'files':>18}: {len(entry.files)} in {registry.model_dir(entry)}")
    for relative, described in sorted(entry.files.items()):
        print(f"{'':>20}{relative} ({_size(described['bytes'])})")
    print(f"{'status':>18}: " + ("files present and intact" if not problems else "; ".join(problems)))
    return ExitCode.REGISTRY if problems else ExitCode.OK


def delete_model(registry: Registry, args: argparse.Namespace) -> int:
    from registry.manage import delete_model as do_delete

    entry = registry.get(args.name)
    children = registry.children(entry.name)
    if children and not args.force:  # say so before asking, not after
        raise UsageError(
            f"'{entry.name}' has fine-tunes in the registry: {', '.join(children)}",
            hint="delete those first, or add --force (they keep a dangling fine_tuned_from)",
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not deleting '{entry.name}' without confirmation", hint="add --yes")
        answer = input(f"delete '{entry.name}' and its files in {registry.model_dir(entry)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    do_delete(registry, args.name, force=args.force)
    print(f"deleted '{args.name}'")
    return 0


def validate(registry: Registry, args: argparse.Namespace) -> int:
    from registry.manage import validate_registry

    problems = validate_registry(registry, quick=args.quick)
    if problems:
        for problem in problems:
            print(f"problem: {problem}")
        raise RegistryError(
            f"the registry at {registry.root} has {len(problems)} problem(s), listed above",
            problems,
            hint="re-import or delete the models named, and remove leftover directories",
        )
    count = len(registry.entries())
    print(f"registry at {registry.root}: {count} model(s), all consistent")
    return 0


def _size(value: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"

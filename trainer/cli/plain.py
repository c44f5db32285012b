"""The plain front door: ``--config FILE [--max-steps N] [--data FILE] [--resume PATH] [key=value ...]``.

The flags become config layers, lowest to highest precedence: the schema's defaults, the YAML
file, ``key=value`` overrides, then --data/--resume/--branch and --max-steps. The layers are
planned and run by the same code as the Hydra door's (trainer/run/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.cli.arguments import OneLineArgumentParser
from trainer.cli.console import init_distributed
from trainer.cli.help import plain_door_epilog, program_name
from trainer.cli.shipped import GROUPS, find_config_file, group_of_config, mirror_config
from trainer.cli.signals import import_torch
from trainer.errors import UsageError

# Any of these on the command line selects this door (Hydra's parser would reject --config).
PLAIN_FLAGS = ("--config", "--max-steps", "--data", "--resume", "--branch", "--print-config", "--help-config")
# Runs go under the current directory, as Hydra's do.
OUTPUTS_DIR = Path("outputs")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=program_name(),
        description="Train a character-level Transformer or fine-tune a registry model; "
        "each run gets its own outputs/<date>/<time>/ directory.",
        epilog=plain_door_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.help_option = "--help-config"
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file, or the name of a shipped example (small-model, ...); unset keys keep their defaults",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="stop after step N (total, also when resuming); the LR schedule keeps the "
        "length the config plans, so a run can be done in parts and resumed exactly",
    )
    parser.add_argument("--data", metavar="FILE", help="UTF-8 text file to train on (default: the built-in corpus)")
    parser.add_argument(
        "--resume", metavar="PATH", help="a checkpoint directory, or a run directory (its latest complete checkpoint)"
    )
    parser.add_argument(
        "--branch",
        metavar="NAME",
        help="with --resume: register that checkpoint as registry model NAME and start a new fine-tune "
        "of it (step 0, fresh optimizer, any setting may change); the original run and models stay as they are",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the config this command would run with, then exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any config field, e.g. n_layers=2")
    return parser


def config_layers(args: argparse.Namespace) -> list:
    from trainer.config.compose import ConfigLayer
    from trainer.config.parse import overrides_layer, yaml_layer
    from trainer.run.plan import stop_early_layer

    layers = [yaml_layer(find_config_file(args.config))] if args.config else []
    layers.append(overrides_layer(args.overrides))
    flags = {"data_path": args.data, "resume": args.resume, "branch": args.branch}
    layers.append(ConfigLayer("command-line flags", {key: value for key, value in flags.items() if value is not None}))
    if args.max_steps is not None:
        layers.append(stop_early_layer(layers, args.max_steps))
    return layers


def override_strings(args: argparse.Namespace) -> list[str]:
    """The request as Hydra-style overrides, for .hydra/overrides.yaml."""
    pairs = [
        ("config_file", args.config),
        ("data_path", args.data),
        ("resume", args.resume),
        ("branch", args.branch),
        ("max_steps", args.max_steps),
    ]
    return [f"{key}={value}" for key, value in pairs if value is not None] + list(args.overrides)


def run_plain(argv: list[str]) -> int:
    if "--help-config" in argv:
        build_parser().print_help()
        return 0
    refuse_hydra_syntax(argv)
    args = build_parser().parse_intermixed_args(argv)
    import_torch()  # before the run layer, which imports it
    import yaml

    from trainer.run.plan import plan_run
    from trainer.run.rundir import create_run_dir
    from trainer.run.start import start_run

    init_distributed()
    layers = config_layers(args)
    if args.print_config:
        config, _ = plan_run(layers)
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    start_run(layers, lambda: create_run_dir(OUTPUTS_DIR), overrides=override_strings(args))
    return 0


def refuse_hydra_syntax(argv: list[str]) -> None:
    """A command that mixes the doors (a group or -m beside --config/--data/...) gets one line
    that spells it for the Hydra door, instead of "unknown key 'training'"."""
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    groups = [arg for arg in argv if arg.split("=", 1)[0] in GROUPS]
    if not (multirun or groups):
        return
    hint = f"for the Hydra door write: {program_name()} {' '.join(_as_hydra_command(argv))}"
    if multirun:
        message = "sweeps (-m) belong to the Hydra door, which takes key=value overrides, not --config/--data/... flags"
    else:
        message = (
            f"{groups[0]} is a Hydra config group, which the plain --config door does not take; a command uses one door"
        )
        mirror = mirror_config(groups[0])
        if mirror:
            hint += f"; or keep the flags and use --config {mirror} (the same settings as {groups[0]})"
    raise UsageError(message, hint=hint)


_FLAG_KEYS = {"--data": "data_path", "--max-steps": "max_steps", "--resume": "resume", "--branch": "branch"}


def _as_hydra_command(argv: list[str]) -> list[str]:
    """The plain door's flags rewritten as the Hydra door's overrides and options."""
    words, rest = [], list(argv)
    while rest:
        flag, has_value, value = rest.pop(0).partition("=")
        if flag not in PLAIN_FLAGS:
            words.append(f"{flag}={value}" if has_value else flag)
            continue
        if not has_value and flag not in ("--print-config", "--help-config"):
            value = rest.pop(0) if rest else ""
        if flag in _FLAG_KEYS:
            words.append(f"{_FLAG_KEYS[flag]}={value}")
        elif flag == "--config":
            words.append(group_of_config(value) or f"(the settings of {value} as key=value)")
        elif flag == "--print-config":
            words.append("--cfg job")
    return words

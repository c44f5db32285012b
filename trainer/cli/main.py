"""lmrunner: train a character-level Transformer, with every run in its own directory.

Two front doors to one schema (trainer/config.py):
    python main.py [model=...] [training=...] [key=value ...] [-m]     Hydra (trainer/hydra_app.py)
    python main.py --config FILE [--max-steps N] [--data FILE] [--resume PATH] [key=value ...]

This file only routes the command line and turns typed errors into one line and an exit
code (DESIGN.md "Errors and exit codes"); the work happens in trainer/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

import yaml

OVERVIEW = """\
usage: python main.py [model=GROUP] [training=GROUP] [key=value ...] [-m] [--cfg job] [--info]
       python main.py --config FILE [--max-steps N] [--data FILE] [--resume PATH [--branch NAME]] [key=value ...]

Train a language model from scratch or fine-tune one from the registry; every run gets its own directory.

Hydra front door (the default): config groups and key=value overrides composed onto one schema.
  groups:   model={models}   training={trainings}
  python main.py                                      the defaults (model=custom training=default)
  python main.py training=fast n_layers=2             a group and an override
  python main.py -m training=fast,detailed n_layers=2,4    a sweep: 4 jobs, summary in multirun/
  python main.py training=fast --cfg job              print the composed config, run nothing
  python main.py resume=outputs/DATE/TIME             continue a run in its own directory
  Runs go to outputs/<date>/<time>/, sweeps to multirun/<date>/<time>/<job>/.
  Hydra's own options: python main.py --hydra-help

Model registry (./models, or $LMRUNNER_HOME):
  python main.py import-model Qwen/Qwen2.5-0.5B --name qwen-0.5b-base   from the Hub, or a local directory
  python main.py list-models | model-info NAME | delete-model NAME | validate-registry
  python main.py register-model outputs/DATE/TIME/checkpoints/step-N --name NAME
  python main.py model_name=NAME data_path=my.txt     fine-tune a registry model (see README "Fine-tuning")
  python main.py --resume CHECKPOINT --branch NAME    a new fine-tune branch from a checkpoint
  python main.py SUBCOMMAND --help                    the options of each

Plain front door: a YAML file (see configs/) with the same keys.
  python main.py --config configs/small-model.yaml --max-steps 50
  python main.py --help-config                        all flags of the plain front door

Exit codes: 0 ok, 1 runtime error, 2 usage or config error, 3 data error, 4 non-finite loss,
5 model registry inconsistent, 130/143 interrupted (a checkpoint was saved).
LMRUNNER_DEBUG=1 shows tracebacks.
"""

PLAIN_FLAGS = ("--config", "--max-steps", "--data", "--resume", "--branch", "--print-config", "--help-config")

EXAMPLES = """\
examples:
  python main.py --data my.txt                            the defaults, on your own text
  python main.py --config configs/small-model.yaml --max-steps 50
  python main.py --config configs/default.yaml --data my.txt learning_rate=1e-3
  python main.py --resume outputs/2026-11-23/10-41-05     continue a run from its latest checkpoint
  python main.py --config configs/large-model.yaml --print-config

Every field of the config can be overridden as key=value after the flags (later wins:
defaults < --config file < key=value < --max-steps/--data/--resume). Runs are written to
outputs/<date>/<time>/. Exit codes: 0 ok, 1 runtime error, 2 usage or config error,
3 data error, 4 non-finite loss, 130/143 interrupted (a checkpoint was saved).
Set LMRUNNER_DEBUG=1 to see tracebacks.
"""

OUTPUTS_DIR = Path("outputs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Train a character-level Transformer or fine-tune a registry model; "
        "each run gets its own outputs/<date>/<time>/ directory.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (see configs/); unset keys keep their defaults"
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
    from trainer.config.parse import overrides_layer, yaml_layer
    from trainer.config.schema import ConfigLayer, compose_config

    layers = [yaml_layer(args.config)] if args.config else []
    layers.append(overrides_layer(args.overrides))
    flags = {}
    if args.data is not None:
        flags["data_path"] = args.data
    if args.resume is not None:
        flags["resume"] = args.resume
    if args.branch is not None:
        flags["branch"] = args.branch
    if args.max_steps is not None:
        planned = compose_config(layers)
        if planned.lr_decay_steps is None and planned.resume is None and args.resume is None:
            # --max-steps says where to stop, not how long the schedule is: keep the planned length.
            flags["lr_decay_steps"] = planned.max_steps
        flags["max_steps"] = args.max_steps
    layers.append(ConfigLayer("command-line flags", flags))
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
    from trainer.run.rundir import create_run_dir
    from trainer.run.start import plan_run, start_run

    if "--help-config" in argv:
        build_parser().print_help()
        return 0
    args = build_parser().parse_intermixed_args(argv)
    init_distributed()
    layers = config_layers(args)
    if args.print_config:
        config, _ = plan_run(layers)
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    result = start_run(layers, lambda: create_run_dir(OUTPUTS_DIR), overrides=override_strings(args))
    logging.getLogger("lmrunner").info(
        "done: %d steps, final loss %s, run directory %s",
        result.steps,
        f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a",
        result.run_dir,
    )
    return 0


def route(argv: list[str]) -> int:
    """--help: the overview; any plain-door flag: the --config path; else the Hydra app
    (Hydra's own parser rejects --config as an ambiguous abbreviation, so it never sees it)."""
    if argv in (["-h"], ["--help"]):
        from trainer.cli.hydra_app import group_options

        print(OVERVIEW.format(models="|".join(group_options("model")), trainings="|".join(group_options("training"))))
        return 0
    from trainer.cli.registry_commands import SUBCOMMANDS

    if argv and argv[0] in SUBCOMMANDS:
        from trainer.cli.registry_commands import main as registry_main

        return registry_main(argv)
    if any(arg.split("=", 1)[0] in PLAIN_FLAGS for arg in argv):
        return run_plain(argv)
    from trainer.cli.hydra_app import run_hydra

    init_distributed()
    return run_hydra(argv)


def init_distributed() -> None:
    """Under torchrun, join the process group before anything is decided (the run directory
    is rank 0's to choose); a plain run is rank 0 of 1 and this does nothing."""
    if "WORLD_SIZE" in os.environ:
        from trainer.training.distributed import init_from_env

        if not init_from_env().is_main:  # one console: rank 0's (warnings and errors still show)
            logging.getLogger("lmrunner").setLevel(logging.WARNING)


class _TqdmHandler(logging.Handler):
    """Console log lines that do not tear through the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def setup_console_logging() -> None:
    logger = logging.getLogger("lmrunner")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # Hydra puts a handler on the root logger: do not print twice
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    setup_console_logging()
    debug = os.environ.get("LMRUNNER_DEBUG") == "1"
    try:
        return route(argv)
    except KeyboardInterrupt:
        print(
            "error: interrupted; stopped at once without saving (the last checkpoint, if any, is intact)",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # formatted once, here: one line, its exit code
        from trainer.errors import LmrunnerError

        if debug:
            traceback.print_exc()
        if isinstance(err, LmrunnerError):
            hint = f"; {err.hint}" if err.hint else ""
            rank = os.environ.get("RANK", "0")
            who = "" if rank == "0" else f"(rank {rank}) "  # under DDP every rank reports
            print(f"error: {who}{err.message}{hint}", file=sys.stderr)
            return err.exit_code
        print(f"error: {type(err).__name__}: {err} (set LMRUNNER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        if "torch.distributed" in sys.modules:
            from trainer.training.distributed import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())

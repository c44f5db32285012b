"""lmrunner's command line: route argv to a front door or a subcommand, and exit with its code.

    lmrunner [model=...] [training=...] [key=value ...] [-m]    the Hydra front door (hydra_app.py)
    lmrunner --config FILE [--max-steps N] [--data FILE] ...     the plain front door (plain.py)
    lmrunner import-model | list-models | ...                    the registry (registry_commands.py)
    lmrunner generate | chat | evaluate SOURCE ...               use a trained model (generate.py, chat.py, evaluate.py)
    lmrunner export-model SOURCE OUT_DIR [--merge]               a Hugging Face folder (export.py)
    lmrunner runs list | show | plot | compare                   past and present runs (runs_command.py)

``python main.py`` in a source checkout is the same command. The CLI layer is the only one
that reads argv, prints for the user or picks the exit code; everything below it raises typed
errors (trainer/errors.py), which errors.py here turns into one line each.
"""

from __future__ import annotations

import importlib
import sys

from trainer.cli.console import init_distributed, setup_console_logging
from trainer.cli.errors import report_error
from trainer.cli.help import program_name
from trainer.cli.plain import PLAIN_FLAGS, run_plain
from trainer.cli.registry_commands import SUBCOMMANDS
from trainer.cli.runs_command import COMMAND as RUNS_COMMAND
from trainer.cli.signals import restore_signals, stop_on_signals
from trainer.cli.stdout import StdoutClosed, stdout_watched, stop_quietly
from trainer.errors import UsageError, did_you_mean

# The commands beside the registry's: each module's main(argv), imported only when named.
COMMAND_MODULES = {
    "generate": "trainer.cli.generate",
    "chat": "trainer.cli.chat",
    "evaluate": "trainer.cli.evaluate",
    "export-model": "trainer.cli.export",
    RUNS_COMMAND: "trainer.cli.runs_command",
}
COMMANDS = (*SUBCOMMANDS, *COMMAND_MODULES)


def route(argv: list[str]) -> int:
    """--help: the overview; a registry subcommand; another command (generate, chat, evaluate,
    runs); any plain-door flag: the --config door; else the Hydra app (Hydra's own parser
    rejects --config as an ambiguous abbreviation, so it never sees it)."""
    if argv in (["-h"], ["--help"]):
        from trainer.cli.help import overview
        from trainer.cli.shipped import example_configs, group_options

        print(overview(group_options("model"), group_options("training"), example_configs()))
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        from trainer.cli.registry_commands import main as registry_main

        return registry_main(argv)
    if argv and argv[0] in COMMAND_MODULES:
        return importlib.import_module(COMMAND_MODULES[argv[0]]).main(argv[1:])
    if argv and _looks_like_a_command(argv[0]):
        raise UsageError(
            f"unknown command '{argv[0]}'{did_you_mean(argv[0], COMMANDS)}",
            hint=f"the commands are {', '.join(COMMANDS)}; to train, give no command: "
            f"{program_name()} [GROUP=OPTION ...] [key=value ...] (see --help)",
        )
    if any(arg.split("=", 1)[0] in PLAIN_FLAGS for arg in argv):
        return run_plain(argv)
    from trainer.cli.hydra_app import run_hydra

    init_distributed()
    return run_hydra(argv)


def _looks_like_a_command(word: str) -> bool:
    """A bare word: not an option, not an override (key=value, +key=value, ~key)."""
    return not word.startswith(("-", "+", "~")) and "=" not in word


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    setup_console_logging()
    previous = stop_on_signals()
    try:
        with stdout_watched():
            code = route(argv)
            sys.stdout.flush()  # a reader gone shows here, not at interpreter exit where it cannot be caught
        return code
    except StdoutClosed:
        return stop_quietly()
    except (KeyboardInterrupt, Exception) as err:  # formatted once, here: one line, its exit code
        return report_error(err)
    finally:
        _leave_process_group()
        restore_signals(previous)


def _leave_process_group() -> None:
    """Under torchrun, leave the group together. A Ctrl-C while torch was still importing
    leaves a half-initialised torch.distributed behind: nothing to leave then."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not getattr(dist, "is_initialized", lambda: False)():
        return
    from trainer.training.distributed import shutdown

    shutdown()

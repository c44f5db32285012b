"""Typed errors with fields, and the one table of exit codes.

Library code raises these errors; the CLI layer (trainer/cli/errors.py) formats each once, as
one line, and exits with its code. Every error carries a ``hint``: the one thing the user
should try next. ``ExitCode`` is the only place the codes are written down: the help text
and README render it.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable


class ExitCode(enum.IntEnum):
    """What each exit status of lmrunner means (``describe`` gives the words)."""

    OK = 0
    RUNTIME = 1
    USAGE = 2
    DATA = 3
    NON_FINITE = 4
    REGISTRY = 5
    SIGINT = 130
    SIGTERM = 143

    @property
    def meaning(self) -> str:
        return _EXIT_CODE_MEANINGS[self]


_EXIT_CODE_MEANINGS = {
    ExitCode.OK: "done",
    ExitCode.RUNTIME: "an unexpected runtime error",
    ExitCode.USAGE: "usage or config error: bad flag, config file, key, type or value; an unusable checkpoint",
    ExitCode.DATA: "data error: the data file is missing, empty, not UTF-8 or too short",
    ExitCode.NON_FINITE: "the loss, the weights or the optimizer state became NaN or infinite (nothing is saved for that step)",
    ExitCode.REGISTRY: "the model registry is inconsistent or its index unreadable (validate-registry lists why)",
    ExitCode.SIGINT: "interrupted by SIGINT (Ctrl-C), after saving a checkpoint",
    ExitCode.SIGTERM: "interrupted by SIGTERM (or SIGUSR1/SIGUSR2 from a scheduler), after saving a checkpoint",
}


class LmrunnerError(Exception):
    """Base class: ``str(err)`` is the one-line message, ``hint`` says what to do next."""

    exit_code: int = ExitCode.RUNTIME

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(LmrunnerError):
    """A configuration value, key or file is wrong (exit 2).

    ``key`` names the offending field; ``source`` says where the value came from
    (a file path with line, or "command line").
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        key: str | None = None,
        source: str | None = None,
        hint: str | None = None,
    ):
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message}", hint)
        self.key = key
        self.source = source


class ConfigValueError(ConfigError):
    """A value breaks a rule; names the key and, for cross-field rules, the other key."""

    def __init__(
        self,
        key: str,
        value: object,
        rule: str,
        other_key: str | None = None,
        other_value: object = None,
    ):
        message = f"{key}={value!r} {rule}"
        if other_key is not None:
            message += f" ({other_key}={other_value!r})"
        super().__init__(message, key=key, hint="fix the value in your config file or override it on the command line")
        self.value = value
        self.other_key = other_key
        self.other_value = other_value


class UsageError(LmrunnerError):
    """The command line itself is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class DataError(LmrunnerError):
    """The training text cannot be used (exit 3). ``path`` is the file at fault."""

    exit_code = ExitCode.DATA

    def __init__(self, message: str, path: str, hint: str | None = None):
        super().__init__(f"{path}: {message}", hint)
        self.path = path


class CheckpointError(LmrunnerError):
    """A checkpoint is missing, incomplete, corrupt or incompatible (exit 2: the path given is unusable).
    ``reason`` is the message without the path."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, path: str, hint: str | None = None):
        super().__init__(f"{path}: {message}", hint)
        self.path = path
        self.reason = message


class DiskWriteError(LmrunnerError):
    """Writing a run's files failed: a full disk, a quota, permissions (exit 1). ``cause`` is the
    operating system's reason (the first error, not what failed while cleaning up after it)."""

    exit_code = ExitCode.RUNTIME

    def __init__(self, what: str, path: str, cause: str, hint: str | None = None):
        super().__init__(f"{what} failed: {cause} ({path})", hint)
        self.path = path
        self.cause = cause


class NonFiniteLossError(LmrunnerError):
    """The loss became NaN or infinite (exit 4); no checkpoint is written for that step."""

    exit_code = ExitCode.NON_FINITE

    def __init__(self, step: int, loss: float):
        super().__init__(
            f"loss became {loss} at step {step}; stopped without saving that step",
            hint="lower learning_rate, raise warmup_steps or keep grad_clip on, then resume from the last checkpoint",
        )
        self.step = step
        self.loss = loss


class NonFiniteStateError(LmrunnerError):
    """The weights or optimizer state hold NaN or infinity although the loss was finite (exit 4);
    found before a checkpoint is written, so none is written for that step."""

    exit_code = ExitCode.NON_FINITE

    def __init__(self, step: int, what: str):
        super().__init__(
            f"{what} became NaN or infinite at step {step}; stopped without saving that step",
            hint="start a new run with a lower learning_rate, more warmup_steps and grad_clip on "
            "(resuming would repeat the same steps); earlier checkpoints are intact",
        )
        self.step = step
        self.what = what


class TrainingInterrupted(LmrunnerError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved first (exit 130 or 143)."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None):
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "no step had run, nothing saved"
        super().__init__(
            f"interrupted by {signal_name} at step {step}; {saved}",
            hint=f"continue with --resume {checkpoint}" if checkpoint else None,
        )
        self.exit_code = ExitCode.SIGINT if signal_name == "SIGINT" else ExitCode.SIGTERM
        self.step = step
        self.checkpoint = checkpoint


def first_line(err: BaseException) -> str:
    """The first line of a library's error (many run to several lines), or its type if it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class RegistryError(LmrunnerError):
    """The model registry is corrupt or inconsistent (exit 5); ``problems`` lists each."""

    exit_code = ExitCode.REGISTRY

    def __init__(self, message: str, problems: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint or "run: python main.py validate-registry")
        self.problems = problems or []


class ModelNotFoundError(UsageError):
    """A model name that is not in the registry (exit 2)."""

    def __init__(self, name: str, available: list[str]):
        listed = ", ".join(available) if available else "none yet"
        super().__init__(
            f"model '{name}' is not in the registry{did_you_mean(name, available)}; available: {listed}",
            hint="import it with: python main.py import-model REPO_ID_OR_DIR --name NAME",
        )
        self.name = name
        self.available = available


class ImportModelError(LmrunnerError):
    """A model could not be fetched or read (exit 1 for the network, 2 for what was asked)."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = ExitCode.RUNTIME):
        super().__init__(message, hint)
        self.exit_code = exit_code

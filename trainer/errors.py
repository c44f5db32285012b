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
    SIGPIPE = 141
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
    ExitCode.SIGINT: "interrupted by SIGINT (Ctrl-C); during training, after saving a checkpoint",
    ExitCode.SIGPIPE: "stdout was closed by its reader (e.g. piped into head); stopped quietly",
    ExitCode.SIGTERM: "interrupted by SIGTERM, SIGUSR1 or SIGUSR2 (a scheduler); during training, after saving a checkpoint",
}


class LmrunnerError(Exception):
    """Base class: ``str(err)`` is the one-line message, ``hint`` says what to do next."""

    exit_code: int = ExitCode.RUNTIME

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The one line a user reads: what went wrong; what to do next."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def __reduce__(self):
        # Worker processes (datasets.map with num_proc) send errors back pickled; the default
        # would call __init__ with the message alone and fail on subclasses' required fields.
        return _rebuild_error, (type(self), self.message, self.__dict__)


def _rebuild_error(cls: type[LmrunnerError], message: str, state: dict) -> LmrunnerError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


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


class MissingExtraError(ConfigError):
    """What was asked for needs an optional package that is not installed (exit 2); ``extra``
    is the lmrunner extra that installs it."""

    def __init__(self, what: str, package: str, extra: str, key: str | None = None):
        super().__init__(
            f"{what} needs the optional package '{package}', which is not installed",
            key=key,
            hint=f'install it with: pip install -e ".[{extra}]" (an installed lmrunner: pip install "lmrunner[{extra}]")',
        )
        self.package = package
        self.extra = extra


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
    """The loss became NaN or infinite (exit 4); no checkpoint is written for that step.

    Resuming would repeat the same steps exactly, and the settings that would change that
    cannot change on resume; so the hint names what works: a new branch from the last good
    checkpoint with a gentler setting, or a new run."""

    exit_code = ExitCode.NON_FINITE

    def __init__(self, step: int, loss: float, last_checkpoint: str | None = None):
        super().__init__(
            f"loss became {loss} at step {step}; stopped without saving that step", hint=_gentler_run(last_checkpoint)
        )
        self.step = step
        self.loss = loss
        self.last_checkpoint = last_checkpoint


class NonFiniteStateError(LmrunnerError):
    """The weights or optimizer state hold NaN or infinity although the loss was finite (exit 4);
    found before a checkpoint is written, so none is written for that step."""

    exit_code = ExitCode.NON_FINITE

    def __init__(self, step: int, what: str, last_checkpoint: str | None = None):
        super().__init__(
            f"{what} became NaN or infinite at step {step}; stopped without saving that step",
            hint=_gentler_run(last_checkpoint),
        )
        self.step = step
        self.what = what
        self.last_checkpoint = last_checkpoint


def _gentler_run(last_checkpoint: str | None) -> str:
    """What works after a run blew up: resuming would repeat the same steps exactly, and the
    settings that would change that cannot change on resume; a branch (or a new run) can."""
    settings = "learning_rate=<lower> (or warmup_steps=<more>, grad_clip=1.0)"
    if last_checkpoint:
        return (
            f"branch from the last good checkpoint with a gentler setting: --resume {last_checkpoint} "
            f"--branch NEW_NAME {settings}, or start a new run with one"
        )
    return f"start a new run with {settings}"


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


class StopSignal(KeyboardInterrupt):
    """SIGTERM, SIGUSR1 or SIGUSR2 before training started or after it ended, when there is
    nothing to save: raised like Ctrl-C's KeyboardInterrupt (so no ``except Exception`` can
    swallow it) and reported with exit 143. During training the Trainer takes these signals
    over and saves a checkpoint first (TrainingInterrupted)."""

    exit_code = ExitCode.SIGTERM

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


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


class StorageError(LmrunnerError):
    """A file could not be written: the disk is full, read-only or not ours (exit 1). What was
    being changed is left as it was; ``path`` is the file that could not be written."""

    def __init__(self, message: str, path: str, hint: str | None = None):
        super().__init__(message, hint or "free some space (or fix the permissions), then run the same command again")
        self.path = path


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

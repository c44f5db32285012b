"""Typed errors with fields. Library code raises them; main.py formats them once.

Each error knows its exit code (see DESIGN.md "Errors and exit codes") and carries a
``hint``: the one thing the user should try next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmrunnerError(Exception):
    """Base class: ``str(err)`` is the one-line message, ``hint`` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(LmrunnerError):
    """A configuration value, key or file is wrong (exit 2).

    ``key`` names the offending field; ``source`` says where the value came from
    (a file path with line, or "command line").
    """

    exit_code = 2

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

    exit_code = 2


class DataError(LmrunnerError):
    """The training text cannot be used (exit 3). ``path`` is the file at fault."""

    exit_code = 3

    def __init__(self, message: str, path: str, hint: str | None = None):
        super().__init__(f"{path}: {message}", hint)
        self.path = path


class CheckpointError(LmrunnerError):
    """A checkpoint is missing, incomplete, corrupt or incompatible (exit 2: the path given is unusable)."""

    exit_code = 2

    def __init__(self, message: str, path: str, hint: str | None = None):
        super().__init__(f"{path}: {message}", hint)
        self.path = path


class NonFiniteLossError(LmrunnerError):
    """The loss became NaN or infinite (exit 4); no checkpoint is written for that step."""

    exit_code = 4

    def __init__(self, step: int, loss: float):
        super().__init__(
            f"loss became {loss} at step {step}; stopped without saving that step",
            hint="lower learning_rate, raise warmup_steps or keep grad_clip on, then resume from the last checkpoint",
        )
        self.step = step
        self.loss = loss


class TrainingInterrupted(LmrunnerError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved first (exit 130 or 143)."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None):
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "no step had run, nothing saved"
        super().__init__(
            f"interrupted by {signal_name} at step {step}; {saved}",
            hint=f"continue with --resume {checkpoint}" if checkpoint else None,
        )
        self.exit_code = 130 if signal_name == "SIGINT" else 143
        self.step = step
        self.checkpoint = checkpoint


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class RegistryError(LmrunnerError):
    """The model registry is corrupt or inconsistent (exit 5); ``problems`` lists each."""

    exit_code = 5

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

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message, hint)
        self.exit_code = exit_code

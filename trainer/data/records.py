"""Reading tables of examples through ``datasets``: files, a directory, a saved dataset, a Hub id.

``datasets`` parses JSON lines, JSON, CSV and Parquet into memory-mapped Arrow files in its own
cache (HF_DATASETS_CACHE), so a second run does not parse again, and reads Hub datasets
through huggingface_hub's cache (HF_HUB_OFFLINE=1 reads that cache alone). Its errors are
many lines from deep inside; each becomes one DataError here that names the file, and for
a JSON lines file the line that is not JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data.sources import DataSource
from trainer.errors import ConfigError, DataError, first_line

DATA_EXTRA_HINT = 'install the data extra: pip install -e ".[data]" (or pip install "lmrunner[data]")'


def require_datasets(source: DataSource) -> None:
    """Tables need the ``datasets`` package (an extra); checked while the run is planned."""
    try:
        import datasets  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"data_path={source.label!r} is a {source.kind} of examples, which needs the datasets package",
            key="data_path",
            hint=DATA_EXTRA_HINT,
        ) from err


def load_table(source: DataSource):
    """The examples of a table source as a ``datasets.Dataset`` (its train split, or its only one)."""
    require_datasets(source)
    import datasets

    datasets.disable_progress_bars()  # the run's own console says what is happening
    _quiet_hub_retries()
    if source.kind == "table" and all(_blank(file) for file in source.files):
        raise DataError("the data has no examples", path=source.label, hint="give a file with examples in it")
    try:
        if source.kind == "saved":
            loaded = datasets.load_from_disk(source.label)
        elif source.kind == "table":
            loaded = datasets.load_dataset(source.builder, data_files=[str(f) for f in source.files])
        else:
            loaded = datasets.load_dataset(source.label)
    except Exception as err:  # datasets and pyarrow raise many types; each is one line here
        raise _read_error(source, err) from err
    table = _one_split(loaded, source)
    if len(table) == 0:
        raise DataError("the data has no examples", path=source.label, hint="give a file with examples in it")
    return table


def _one_split(loaded, source: DataSource):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded
    splits = list(loaded.keys())
    if "train" in splits:
        return loaded["train"]
    if len(splits) == 1:
        return loaded[splits[0]]
    raise DataError(
        f"the dataset has the splits {', '.join(splits)} and none is called train",
        path=source.label,
        hint="save the split to train on as its own dataset (or a file) and point data_path at it",
    )


def _read_error(source: DataSource, err: Exception) -> DataError:
    message = first_line(_innermost(err))
    if source.kind == "hub":
        return DataError(
            f"cannot load the dataset: {message}",
            path=source.label,
            hint="check the dataset id; without a network, only a dataset already in the Hugging Face "
            "cache loads (HF_HUB_OFFLINE=1)",
        )
    if source.builder == "json":
        for file in source.files:
            located = _first_bad_json_line(file)
            if located:
                return DataError(
                    located, path=str(file), hint="fix or remove that line: each line must be one JSON object"
                )
    kind = {"json": "JSON", "csv": "CSV", "parquet": "Parquet"}.get(source.builder or "", "dataset")
    return DataError(f"cannot be read as {kind}: {message}", path=source.label, hint="check the file's format")


def _innermost(err: BaseException) -> BaseException:
    """datasets wraps the parser's error (DatasetGenerationError ...); the innermost says what."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return err


def _first_bad_json_line(file: Path) -> str | None:
    """For a JSON lines file that failed to load: which line is not a JSON object (read only
    when something failed, so a good file is read once)."""
    if file.suffix.lower() != ".jsonl":
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            return f"is not JSON ({first_line(err)})"
        return None
    with file.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                return f"line {number} is not JSON ({first_line(err)})"
            if not isinstance(value, dict):
                return f"line {number} is a JSON {type(value).__name__}, not an object"
    return None


def _quiet_hub_retries() -> None:
    """huggingface_hub logs a warning at each retry of an unreachable Hub ("Retrying in 8s"):
    the one error line that follows says what happened."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def _blank(file: Path) -> bool:
    """An empty file (or one of whitespace only), which datasets would fail on obscurely."""
    if file.stat().st_size > 4096:
        return False
    return not file.read_bytes().strip()

"""From a run's data settings to its training and validation datasets.

``open_data`` resolves data_path (and val_data_path) and computes what a checkpoint records
and a resume checks: the data's sha256. ``char_vocabulary`` is the character model's
vocabulary, read from the data. ``prepare_data`` tokenizes (once: the token cache), decides
the layout and splits:

- text (a text file, or a table in the text format): one token stream, windows of it; the
  validation split is the stream's last ``1 - train_ratio``, as it always was;
- completion and chat: examples, packed or padded (trainer/data/packing.py); the validation
  split is a fixed ``1 - train_ratio`` of the examples, the same on every run (the
  permutation has its own seed, not the run's, so runs with other seeds compare).

Both keep the training order a pure function of (seed, step): the sampler draws items by
number, and the items (windows, packed rows) are fixed once the data is prepared.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from trainer.config.schema import TrainingConfig
from trainer.data.cache_location import cache_root
from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.chat import require_template, resolve_template, template_sha256
from trainer.data.corpus import check_data_file
from trainer.data.formats import Encoder, FormatChoice, choose_format
from trainer.data.packing import PackedExamples, PaddedExamples, fit_examples
from trainer.data.records import load_table, require_datasets
from trainer.data.sources import DataSource, fingerprint, resolve_source
from trainer.data.text_stream import characters_of, text_chunks
from trainer.data.token_cache import TokenizedData, TokenWriter, tokenized
from trainer.data.windows import WindowDataset, check_window_fits, split_stream
from trainer.errors import ConfigError, DataError

log = logging.getLogger("lmrunner")
# A fixed seed for the example split: the validation examples do not move with the run's seed.
_SPLIT_SEED = 20261125
# Tables of this many rows or more are encoded by worker processes; fewer are not worth starting them.
PARALLEL_ROWS = 20_000
# Progress: (what, done, total), e.g. ("tokenizing", 3, 10) bytes or examples.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DataSpec:
    """A run's data, resolved and identified (sha256s read once, at start)."""

    source: DataSource
    sha256: str
    val_source: DataSource | None = None
    val_sha256: str | None = None
    _tables: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # loaded once

    @property
    def label(self) -> str:
        return self.source.label


def open_data(config: TrainingConfig) -> DataSpec:
    source = resolve_source(config.data_path)
    val = resolve_source(config.val_data_path) if config.val_data_path else None
    tables: dict[str, Any] = {}
    sha = _identify(source, tables)
    val_sha = _identify(val, tables) if val else None
    return DataSpec(source, sha, val, val_sha, tables)


def _identify(source: DataSource, tables: dict[str, Any]) -> str:
    if source.kind == "hub":  # its identity is the cached copy's, known once it is loaded
        tables[source.label] = load_table(source)
        return fingerprint(source, tables[source.label]._fingerprint)
    return fingerprint(source)


def check_data_source(config: TrainingConfig) -> list[tuple[DataSource, int | None]]:
    """What can be checked of the data before a run directory exists (or a model loads): the
    paths name data, text is non-empty UTF-8 (read through once), and a table has the
    datasets package to read it. Returns each source with its characters (None: a table)."""
    sources = [resolve_source(config.data_path)]
    if config.val_data_path is not None:
        sources.append(resolve_source(config.val_data_path))
    checked = []
    for source in sources:
        if source.is_text:
            checked.append((source, sum(check_data_file(str(path)) for path in source.files)))
        else:
            require_datasets(source)
            checked.append((source, None))
    return checked


def _table(spec: DataSpec, source: DataSource):
    if source.label not in spec._tables:
        spec._tables[source.label] = load_table(source)
    return spec._tables[source.label]


def char_vocabulary(config: TrainingConfig, spec: DataSpec) -> list[str]:
    """A new character model's vocabulary: every character of the training data (text files,
    or the text column of a table in the text format), cached beside the tokens by the data's
    sha256, since reading a large corpus through takes a while."""
    path = cache_root() / "tokens" / f"chars-{spec.sha256}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if spec.source.is_text:
        chars = characters_of(spec.source.files)
    else:
        choice = _choice(config, spec, spec.source, None)
        seen: set[str] = set()
        for batch in _table(spec, spec.source).iter(batch_size=1000):
            for text in batch[choice.columns["text"]]:
                seen.update(text or "")
        chars = sorted(seen)
    if not chars:
        raise DataError("the data has no text", path=spec.label, hint="give data with text in it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(chars, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
    return chars


@dataclass(frozen=True)
class TrainingData:
    train: Dataset
    val: Dataset
    info: dict[str, Any]  # what run_start and every checkpoint record about the data


def prepare_data(
    config: TrainingConfig, spec: DataSpec, tokenizer, seq_len: int, progress: Progress | None = None
) -> TrainingData:
    template = _apply_template(config, tokenizer)
    train_tok, choice, cached = _tokenize(config, spec, spec.source, spec.sha256, tokenizer, template, progress)
    val_tok = None
    if spec.val_source is not None:
        val_tok, _, _ = _tokenize(config, spec, spec.val_source, spec.val_sha256, tokenizer, template, progress)
    info = {
        "source": spec.label,
        "sha256": spec.sha256,
        "val_source": spec.val_source.label if spec.val_source else None,
        "val_sha256": spec.val_sha256,
        "format": choice.format,
        "format_reason": choice.reason,
        "template_sha256": template_sha256(template) if choice.format == "chat" else None,
        "examples": train_tok.num_examples,
        "tokens": int(train_tok.meta["tokens"]),
        "target_tokens": int(train_tok.meta["target_tokens"]),
        "token_cache": str(train_tok.directory),
        "token_cache_hit": cached,
    }
    if choice.format == "text":
        train, val = _stream_splits(config, train_tok, val_tok, seq_len, spec.label)
    else:
        train, val, counts = _example_splits(config, train_tok, val_tok, seq_len, tokenizer, spec.label)
        info.update(counts)
    info.update(train_items=len(train), val_items=len(val))
    return TrainingData(train, val, info)


def _apply_template(config: TrainingConfig, tokenizer) -> str | None:
    """A chat_template setting replaces the tokenizer's own; the template in use is returned."""
    template = resolve_template(config.chat_template)
    inner = getattr(tokenizer, "tokenizer", None)
    if template is not None and inner is not None:
        inner.chat_template = template
    return getattr(inner, "chat_template", None)


def _choice(config: TrainingConfig, spec: DataSpec, source: DataSource, tokenizer) -> FormatChoice:
    if source.is_text:
        if config.data_format not in ("auto", "text"):
            raise ConfigError(
                f"data_format={config.data_format} needs a table of examples (.jsonl, .json, .csv, .parquet, a "
                f"dataset), and {source.label} is text",
                key="data_format",
                hint="give data_path a file of examples, or leave data_format at auto or text",
            )
        return FormatChoice("text", {}, "a text file: one stream of text")
    table = _table(spec, source)
    choice = choose_format(config.data_format, list(table.column_names), config.data_columns, source.label)
    if choice.format != "text" and (tokenizer is None or isinstance(tokenizer, CharTokenizer)):
        raise ConfigError(
            f"{source.label} holds {choice.format} examples, which need a model's tokenizer (with EOS"
            + (" and a chat template)" if choice.format == "chat" else ")")
            + ", and this run's is a character vocabulary",
            key="data_format",
            hint="fine-tune a registry model (model_name=...), or set tokenizer=NAME_OR_DIR for the custom model",
        )
    if choice.format == "chat":
        require_template(tokenizer, source.label)
    return choice


def tokenize_source(
    config: TrainingConfig, spec: DataSpec, tokenizer, progress: Progress | None = None
) -> tuple[TokenizedData, FormatChoice]:
    """The training data of ``spec`` tokenized (from the cache when it is there), with its
    format: for what reads data other than training (evaluate)."""
    template = _apply_template(config, tokenizer)
    data, choice, _ = _tokenize(config, spec, spec.source, spec.sha256, tokenizer, template, progress)
    return data, choice


def _tokenize(config, spec, source, sha256, tokenizer, template, progress) -> tuple[TokenizedData, FormatChoice, bool]:
    choice = _choice(config, spec, source, tokenizer)
    masked = choice.format in ("completion", "chat")
    fields = {
        "data_sha256": sha256,
        "tokenizer": tokenizer.fingerprint,
        "format": choice.format,
        "columns": {k: v for k, v in choice.columns.items() if k in _used_columns(choice)},
        "template_sha256": template_sha256(template) if choice.format == "chat" else None,
        "train_on_prompt": config.train_on_prompt if masked else None,
    }

    def build(writer: TokenWriter) -> dict[str, Any]:
        if source.is_text:
            _tokenize_text_files(source, tokenizer, writer, progress)
        else:
            encoder = Encoder(choice, tokenizer, config.train_on_prompt, source.label)
            _tokenize_table(_table(spec, source), encoder, writer, masked, progress)
        if writer.tokens == 0:
            raise DataError("the data has no text", path=source.label, hint="give data with text in it")
        return {"source": source.label, "format_reason": choice.reason}

    started = time.monotonic()
    data, cached = tokenized(fields, tokenizer.vocab_size, masked, build)
    if not cached:  # a cache hit is named in the run's opening lines
        log.info(
            "data: tokenized %s (%s tokens) in %.1f s into %s",
            source.label,
            f"{data.meta['tokens']:,}",
            time.monotonic() - started,
            data.directory,
        )
    return data, choice, cached


def _used_columns(choice: FormatChoice) -> tuple[str, ...]:
    return {"text": ("text",), "chat": ("messages",)}.get(
        choice.format, ("prompt", "completion", "instruction", "input", "output")
    )


def _tokenize_text_files(source: DataSource, tokenizer, writer: TokenWriter, progress: Progress | None) -> None:
    """Files as documents of one stream, EOS between them (a character vocabulary has none)."""
    total = sum(path.stat().st_size for path in source.files)
    done, eos = 0, getattr(tokenizer, "eos_id", None)
    for number, path in enumerate(source.files):
        if number and eos is not None:
            writer.extend([eos])
        batch: list[str] = []
        for chunk in text_chunks(path):
            batch.append(chunk)
            if len(batch) == 16:  # a batch spreads over the cores (fast tokenizers)
                done += _encode_chunks(tokenizer, batch, writer, source.label)
                batch = []
                if progress:
                    progress("tokenizing", done, total)
        done += _encode_chunks(tokenizer, batch, writer, source.label)
    writer.end_example()
    if progress:
        progress("tokenizing", total, total)


def _encode_chunks(tokenizer, chunks: list[str], writer: TokenWriter, label: str) -> int:
    try:
        for ids in tokenizer.encode_batch(chunks):
            writer.extend(ids)
    except KeyError as err:  # a character model's vocabulary lacks a character of this text
        raise DataError(
            f"has {err.args[0]}",
            path=label,
            hint="use text made of characters the model's vocabulary has (the text it was trained on), "
            "or train a new model",
        ) from err
    return sum(len(chunk.encode("utf-8")) for chunk in chunks)


def _tokenize_table(table, encoder: Encoder, writer: TokenWriter, masked: bool, progress: Progress | None) -> None:
    """Rows to examples in batches; a large table is encoded by worker processes (datasets.map)."""
    rows = len(table)
    workers = min(os.cpu_count() or 1, 8) if rows >= PARALLEL_ROWS else 1
    encoded = table.map(
        encoder.encode_rows,
        batched=True,
        batch_size=1000,
        num_proc=workers if workers > 1 else None,
        remove_columns=table.column_names,
        keep_in_memory=workers == 1,
        desc="tokenizing",
    )
    done = 0
    for batch in encoded.iter(batch_size=1000):
        for ids, mask in zip(batch["ids"], batch["mask"], strict=True):
            writer.add(ids, mask if masked else None)
        done += len(batch["ids"])
        if progress:
            progress("tokenizing", done, rows)


def _stream_splits(config, train_tok: TokenizedData, val_tok, seq_len: int, label: str):
    if val_tok is None:
        train_tokens, val_tokens = split_stream(train_tok.tokens, config.train_ratio)
    else:
        train_tokens, val_tokens = train_tok.tokens, val_tok.tokens
    check_window_fits(len(train_tokens), len(val_tokens), seq_len, label)
    return WindowDataset(train_tokens, seq_len), WindowDataset(val_tokens, seq_len)


def _example_splits(config, train_tok: TokenizedData, val_tok, seq_len: int, tokenizer, label: str):
    if val_tok is None:
        order = np.random.default_rng(_SPLIT_SEED).permutation(train_tok.num_examples)
        cut = int(len(order) * config.train_ratio)
        parts = [(train_tok, np.sort(order[:cut])), (train_tok, np.sort(order[cut:]))]
    else:
        parts = [(train_tok, np.arange(train_tok.num_examples)), (val_tok, np.arange(val_tok.num_examples))]
    pad = tokenizer.eos_id if tokenizer.eos_id is not None else 0
    datasets, counts = [], {"truncated": 0, "dropped": 0}
    for name, (data, chosen) in zip(("training", "validation"), parts, strict=True):
        fitted = fit_examples(data, chosen, seq_len, config.long_examples)
        if len(fitted.ids) == 0:
            raise DataError(
                f"the {name} split has no example that fits max_seq_len={seq_len} with a target left to learn",
                path=label,
                hint="raise max_seq_len, use long_examples=truncate, or give more examples (or a val_data_path)",
            )
        if name == "training":
            counts.update(truncated=fitted.truncated, dropped=fitted.dropped)
        if config.packing:
            datasets.append(PackedExamples(data, fitted, seq_len, pad))
        else:
            datasets.append(PaddedExamples(data, fitted, pad))
    if counts["truncated"] or counts["dropped"]:
        log.warning(
            "data: %d example(s) longer than max_seq_len + 1 = %d tokens %s, %d left out (long_examples=%s)",
            counts["truncated"],
            seq_len + 1,
            "cut" if config.long_examples == "truncate" else "found",
            counts["dropped"],
            config.long_examples,
        )
    train, val = datasets
    if isinstance(train, PackedExamples):
        counts["padding_fraction"] = round(train.padding_fraction(), 4)
    return train, val, counts

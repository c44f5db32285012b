"""Instruction and chat data: formats, loss masks, packing, the token cache, and bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from trainer.data.chat import chat_example
from trainer.data.formats import choose_format
from trainer.data.packing import IGNORE_INDEX, PackedExamples, pack_rows
from trainer.data.prepare import open_data, prepare_data
from trainer.data.tokenizers import load_tokenizer
from trainer.errors import ConfigError, DataError

datasets = pytest.importorskip("datasets")

QUESTIONS = ["What is {}?", "Explain {} briefly.", "Why does {} matter?"]
TOPICS = ["a gradient", "dropout", "a checkpoint", "warmup", "a tokenizer", "weight decay", "packing", "a sampler"]


def chat_rows(count=48):
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        turns = [{"role": "user", "content": QUESTIONS[i % 3].format(topic)}]
        turns.append({"role": "assistant", "content": f"Answer {i}: {topic} is explained here."})
        if i % 4 == 0:  # some conversations have a system turn and a second exchange
            turns.insert(0, {"role": "system", "content": "Be brief."})
            turns += [{"role": "user", "content": "More?"}, {"role": "assistant", "content": f"More {i}."}]
        rows.append({"messages": turns})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_chat_qwen_dir):
    return load_tokenizer(tiny_chat_qwen_dir)


def prepared(path, tokenizer, seq_len=128, **changes):
    config = tiny_config(path, max_seq_len=seq_len, **changes)
    return prepare_data(config, open_data(config), tokenizer, seq_len)


def test_auto_decides_the_format_from_the_columns_and_says_why():
    assert choose_format("auto", ["messages"], {}, "d").format == "chat"
    assert choose_format("auto", ["prompt", "completion", "id"], {}, "d").format == "completion"
    alpaca = choose_format("auto", ["instruction", "input", "output"], {}, "d")
    assert alpaca.format == "completion" and "Alpaca" in alpaca.reason
    renamed = choose_format("auto", ["question", "answer"], {"prompt": "question", "completion": "answer"}, "d")
    assert renamed.format == "completion" and renamed.columns["prompt"] == "question"
    assert choose_format("auto", ["text"], {}, "d").reason == "auto: found the column text"
    with pytest.raises(DataError, match="cannot tell the data format from the columns question, answer") as info:
        choose_format("auto", ["question", "answer"], {}, "d.jsonl")
    assert "data_columns" in info.value.hint and info.value.exit_code == 3
    with pytest.raises(DataError, match="needs the column 'prompt', and the data has question") as info:
        choose_format("completion", ["question"], {}, "d.jsonl")
    assert info.value.hint == "map yours onto it: data_columns={prompt: YOUR_COLUMN}"


def test_only_the_assistants_tokens_and_the_eos_are_targets(chat_tokenizer):
    turns = chat_rows()[0]["messages"]  # system, user, assistant, user, assistant
    ids, mask = chat_example(chat_tokenizer, turns, train_on_prompt=False, label="d")
    decode = chat_tokenizer.tokenizer.decode
    trained = decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == "Answer 0: a gradient is explained here.<|im_end|>\nMore 0.<|im_end|>\n<|endoftext|>"
    untrained = decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "Be brief." in untrained and "What is a gradient?" in untrained and "Answer" not in untrained
    assert ids[-1] == chat_tokenizer.eos_id  # appended, since the template does not end with it
    _, every = chat_example(chat_tokenizer, turns, train_on_prompt=True, label="d")
    assert all(every)


def test_a_chat_turn_with_an_unknown_role_is_one_data_error(chat_tokenizer):
    with pytest.raises(DataError, match="d.jsonl: a chat turn has the role 'bot'; the roles are system"):
        chat_example(chat_tokenizer, [{"role": "bot", "content": "hi"}], False, "d.jsonl")


def test_a_decoded_training_batch_has_loss_on_exactly_the_responses(tmp_path, chat_tokenizer):
    """Packed rows of chat examples: every target that counts is a response token, its
    end-of-turn marker or the EOS; positions restart for each example; no target crosses
    from one example into the next."""
    path = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    data = prepared(path, chat_tokenizer)
    assert isinstance(data.train, PackedExamples) and data.info["format"] == "chat"
    assert data.info["format_reason"] == "auto: found the columns messages"
    responses = {turn["content"] for row in chat_rows() for turn in row["messages"] if turn["role"] == "assistant"}
    decode = chat_tokenizer.tokenizer.decode
    for row in range(len(data.train)):
        inputs, targets, positions = data.train[row]
        starts = (positions == 0).nonzero().flatten().tolist()
        for start, end in zip(starts, [*starts[1:], len(positions)], strict=True):
            counted = targets[start:end][targets[start:end] != IGNORE_INDEX].tolist()
            if not counted:
                continue  # padding at the end of the row
            text = decode(counted)
            pieces = [p for p in text.replace("<|endoftext|>", "").split("<|im_end|>\n") if p]
            assert pieces and all(piece in responses for piece in pieces), text
            assert counted[-1] == chat_tokenizer.eos_id
            assert positions[start:end].tolist() == list(range(end - start))
    assert data.info["target_tokens"] < data.info["tokens"] and data.info["truncated"] == 0


def test_completion_and_alpaca_examples_train_on_the_completion_and_eos(tmp_path, chat_tokenizer):
    rows = [
        {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else "quickly", "output": str(i + 1)} for i in range(40)
    ]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    data = prepared(path, chat_tokenizer, packing=False)
    assert data.info["format"] == "completion" and "Alpaca" in data.info["format_reason"]
    decode = chat_tokenizer.tokenizer.decode
    for item in range(len(data.train)):
        inputs, targets = data.train[item]
        counted = targets[targets != IGNORE_INDEX].tolist()
        answer = decode(counted[:-1])
        assert answer.isdigit() and counted[-1] == chat_tokenizer.eos_id
        prompt = decode(inputs[: len(inputs) - len(counted) + 1].tolist())
        assert prompt.startswith("Add ") and prompt.endswith("\n\n")
    # Padded batches: a batch is as long as its longest example; padding never counts.
    batch = data.train.collate([data.train[0], data.train[1]])
    assert batch[0].shape == batch[1].shape and (batch[1] != IGNORE_INDEX).sum() > 0


def test_long_examples_are_cut_or_dropped_and_counted(tmp_path, chat_tokenizer):
    rows = [{"prompt": "Say it: ", "completion": "word " * (60 if i % 5 == 0 else 3)} for i in range(30)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    cut = prepared(path, chat_tokenizer, seq_len=48, long_examples="truncate", train_ratio=0.8)
    dropped = prepared(path, chat_tokenizer, seq_len=48, long_examples="drop", train_ratio=0.8)
    assert cut.info["truncated"] > 0 and cut.info["dropped"] == 0
    assert dropped.info["dropped"] == cut.info["truncated"] and dropped.info["truncated"] == 0
    assert all(len(x) <= 48 for x, *_ in (cut.train[i] for i in range(len(cut.train))))


def test_tokenized_once_then_read_from_the_cache(tmp_path, chat_tokenizer, private_cache):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_rows(12))
    first = prepared(path, chat_tokenizer, train_ratio=0.75)
    second = prepared(path, chat_tokenizer, train_ratio=0.75)
    assert not first.info["token_cache_hit"] and second.info["token_cache_hit"]
    assert first.info["token_cache"] == second.info["token_cache"]
    assert str(private_cache) in first.info["token_cache"]
    # Another template is another entry: the masks would differ.
    other = prepared(path, chat_tokenizer, train_ratio=0.75, chat_template=_chatml_with_prefix())
    assert other.info["token_cache"] != first.info["token_cache"] and other.info["template_sha256"]


def _chatml_with_prefix():
    from tests.conftest import CHATML

    return "Conversation:\n" + CHATML


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "fine"}\n{"text": "fine"}\n{"text": broken}\n', "bad.jsonl: line 3 is not JSON"),
        ("list.jsonl", '{"text": "fine"}\n[1, 2]\n', "list.jsonl: line 2 is a JSON list, not an object"),
        ("empty.jsonl", "", "the data has no examples"),
        ("cols.jsonl", '{"question": "q", "answer": "a"}\n', "cannot tell the data format from the columns question"),
        ("bad.parquet", "this is no parquet file", "cannot be read as Parquet"),
        ("role.jsonl", '{"messages": [{"role": "robot", "content": "x"}]}\n', "a chat turn has the role 'robot'"),
    ],
)
def test_bad_data_is_one_line_and_nothing_is_cached(tmp_path, chat_tokenizer, private_cache, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    before = sorted((private_cache / "tokens").glob("*")) if (private_cache / "tokens").exists() else []
    with pytest.raises(DataError) as info:
        prepared(path, chat_tokenizer)
    assert message in info.value.message and info.value.exit_code == 3
    after = sorted((private_cache / "tokens").glob("*"))
    assert [p for p in after if p not in before and not p.name.endswith(".lock")] == []


def test_chat_data_needs_a_template_and_a_char_vocabulary_is_refused(tmp_path, tiny_qwen_dir, chat_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    with pytest.raises(ConfigError, match="the tokenizer has no chat template") as info:
        prepared(path, load_tokenizer(tiny_qwen_dir))
    assert info.value.exit_code == 2 and "chat_template" in info.value.hint
    from trainer.data.char_tokenizer import CharTokenizer

    with pytest.raises(ConfigError, match="which need a model's tokenizer") as info:
        prepared(path, CharTokenizer.from_text("abc"))
    assert "tokenizer=" in info.value.hint
    with pytest.raises(ConfigError, match="data_format=chat needs a table of examples"):
        prepared(
            tmp_path / "t.txt" if (tmp_path / "t.txt").write_text("x" * 500) else None,
            chat_tokenizer,
            data_format="chat",
        )


def test_a_saved_dataset_and_a_local_dataset_folder_load_like_files(tmp_path, chat_tokenizer):
    rows = chat_rows(12)
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", rows[:6])
    write_jsonl(folder / "part-1.jsonl", rows[6:])
    a, b = prepared(saved, chat_tokenizer, train_ratio=0.75), prepared(folder, chat_tokenizer, train_ratio=0.75)
    assert a.info["examples"] == b.info["examples"] == 12 and a.info["tokens"] == b.info["tokens"]


def test_a_hub_dataset_that_is_not_in_the_offline_cache_is_one_line(tmp_path, chat_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match="nobody/no-such-dataset: cannot load the dataset") as info:
        open_data(tiny_config(None, data_path="nobody/no-such-dataset"))
    assert "HF_HUB_OFFLINE" in info.value.hint


def test_a_hub_dataset_in_the_offline_cache_loads_by_its_id(tmp_path, chat_tokenizer, private_cache, monkeypatch):
    """A machine that downloaded owner/name before: datasets' cache holds it prepared, and
    HF_HUB_OFFLINE=1 reads it from there by its id."""
    import datasets
    import huggingface_hub.constants
    from datasets.packaged_modules.json.json import Json

    cache = tmp_path / "datasets-cache"
    # What load_dataset("acme/tiny-chat") leaves behind: the table prepared as Arrow under
    # <cache>/acme___tiny-chat/<config>/<version>/<hash>/.
    source = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    Json(
        cache_dir=str(cache), dataset_name="tiny-chat", data_files={"train": [str(source)]}, hash="0" * 16
    ).download_and_prepare()
    (cache / "tiny-chat").rename(cache / "acme___tiny-chat")
    (config_dir,) = (cache / "acme___tiny-chat").iterdir()
    config_dir.rename(config_dir.parent / "default")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    data = prepared("acme/tiny-chat", chat_tokenizer)
    assert data.info["format"] == "chat" and data.info["examples"] == 16
    again = prepared("acme/tiny-chat", chat_tokenizer)
    assert again.info["token_cache_hit"] and again.info["sha256"] == data.info["sha256"]


def test_best_fit_packing_fills_rows():
    lengths = np.array([30, 20, 11, 10, 9, 5, 3])  # positions taken: one fewer each
    rows = pack_rows(lengths, seq_len=32)
    assert sorted(i for row in rows for i in row) == list(range(7))
    assert all(sum(int(lengths[i]) - 1 for i in row) <= 32 for row in rows)
    assert len(rows) == 3
    assert pack_rows(lengths, 32) == rows  # the same every time


def test_the_text_column_of_a_table_trains_the_character_model(tmp_path):
    rows = [{"text": f"document number {i}: " + "some words " * 20} for i in range(30)]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    from trainer.data.char_tokenizer import CharTokenizer
    from trainer.data.prepare import char_vocabulary

    config = tiny_config(path)
    spec = open_data(config)
    tokenizer = CharTokenizer(char_vocabulary(config, spec))
    data = prepare_data(config, spec, tokenizer, 32)
    assert data.info["format"] == "text" and data.info["tokens"] == sum(len(r["text"]) for r in rows)
    x, y = data.train[0]
    assert torch.equal(x[1:], y[:-1]) and x.dtype == torch.int64
    assert "".join(tokenizer.decode(torch.cat([x, y[-1:]]))) == rows[0]["text"][: len(x) + 1]
    meta = json.loads((Path(data.info["token_cache"]) / "meta.json").read_text())
    assert meta["dtype"] == "uint8"  # a character vocabulary: one byte a token


def test_bad_rows_found_by_worker_processes_are_the_same_one_line(tmp_path, chat_tokenizer, private_cache, monkeypatch):
    import pickle

    import trainer.data.prepare as prepare

    error = DataError("a chat turn has the role 'robot'", path="x.jsonl", hint="use user or assistant")
    copy = pickle.loads(pickle.dumps(error))  # how a worker process sends it back
    assert (type(copy), copy.line(), copy.path, copy.exit_code) == (DataError, error.line(), "x.jsonl", 3)
    monkeypatch.setattr(prepare, "PARALLEL_ROWS", 2)  # datasets.map(num_proc=2) for a tiny table
    rows = chat_rows(8) + [{"messages": [{"role": "robot", "content": "x"}]}]
    path = write_jsonl(tmp_path / "role.jsonl", rows)
    with pytest.raises(DataError) as info:
        prepared(path, chat_tokenizer)
    assert "a chat turn has the role 'robot'" in info.value.message and info.value.exit_code == 3

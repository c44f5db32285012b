import pytest
import torch

from tests.conftest import tiny_config
from trainer.data.char_tokenizer import CharTokenizer
from trainer.data.corpus import check_data_file
from trainer.data.prepare import open_data, prepare_data
from trainer.data.sampler import ResumableBatchSampler
from trainer.data.windows import WindowDataset, eval_loader, split_stream
from trainer.errors import DataError


def test_split_stream_uses_train_ratio():
    tokens = torch.arange(100)
    train, val = split_stream(tokens, 0.9)
    assert len(train) == 90 and len(val) == 10
    assert train.data_ptr() == tokens.data_ptr()  # views, no copies


def test_window_items_are_shifted_views():
    tokens = torch.arange(20)
    ds = WindowDataset(tokens, 4)
    assert len(ds) == 16
    x, y = ds[3]
    assert x.tolist() == [3, 4, 5, 6] and y.tolist() == [4, 5, 6, 7]
    assert x.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()


def test_sampler_is_deterministic_and_covers_each_epoch():
    sampler = ResumableBatchSampler(num_items=10, batch_size=4, seed=1)
    stream = iter(sampler)
    first_epoch = [i for _ in range(5) for i in next(stream)][:20]
    assert sorted(first_epoch[:10]) == list(range(10))  # epoch 0 is a permutation
    assert sorted(first_epoch[10:20]) == list(range(10))  # and so is epoch 1
    again = iter(ResumableBatchSampler(10, 4, seed=1))
    assert [next(again) for _ in range(5)] == [sampler.batch_indices(k) for k in range(5)]
    assert ResumableBatchSampler(10, 4, seed=2).batch_indices(0) != sampler.batch_indices(0)


def test_sampler_resumes_mid_epoch_without_replaying():
    full = iter(ResumableBatchSampler(1000, 16, seed=5))
    reference = [next(full) for _ in range(100)]
    resumed = iter(ResumableBatchSampler(1000, 16, seed=5, start_batch=37))
    assert [next(resumed) for _ in range(63)] == reference[37:]


def test_eval_loader_is_fixed_and_spread():
    ds = WindowDataset(torch.arange(500), 8)
    loader = eval_loader(ds, batch_size=4, num_batches=3)
    first = [x.clone() for x, _ in loader]
    second = [x for x, _ in loader]
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0][0, 0] == 0 and first[-1][-1, 0] == len(ds) - 1


def test_data_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        check_data_file(str(tmp_path / "missing.txt"))
    assert info.value.exit_code == 3 and "missing.txt" in str(info.value)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        check_data_file(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*offset 3"):
        check_data_file(str(tmp_path / "latin1.txt"))
    with pytest.raises(DataError, match="not a regular file"):
        check_data_file(str(tmp_path))


def prepared(path, tokenizer, seq_len, train_ratio):
    config = tiny_config(path, train_ratio=train_ratio)
    return prepare_data(config, open_data(config), tokenizer, seq_len)


def test_too_short_for_a_window(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("just a few words here")
    with pytest.raises(DataError, match="too short.*max_seq_len \\+ 1 = 33") as info:
        prepared(path, CharTokenizer.from_text(path.read_text()), seq_len=32, train_ratio=0.9)
    assert str(path) in str(info.value)


def test_prepare_data_with_foreign_tokenizer_is_a_data_error(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 20)
    with pytest.raises(DataError, match="not in the vocabulary"):
        prepared(path, CharTokenizer.from_text("abc"), seq_len=4, train_ratio=0.5)


def test_a_huge_stream_is_shuffled_position_by_position_without_memory():
    import numpy as np

    from trainer.data.sampler import MATERIALIZED_LIMIT, feistel_permutation

    for n in (1, 2, 3, 17, 1000, 4099):
        image = feistel_permutation(np.arange(n, dtype=np.uint64), n, key=5)
        assert sorted(image.tolist()) == list(range(n))  # a permutation of range(n)
    n = 10**9  # a billion windows: drawn whole, the order alone would take 8 GB
    assert n > MATERIALIZED_LIMIT
    sampler = ResumableBatchSampler(n, 16, seed=3)
    batches = [sampler.batch_indices(k) for k in range(50)]
    assert all(0 <= i < n for batch in batches for i in batch) and len({i for b in batches for i in b}) == 800
    resumed = iter(ResumableBatchSampler(n, 16, seed=3, start_batch=20))
    assert [next(resumed) for _ in range(30)] == batches[20:]
    assert ResumableBatchSampler(n, 16, seed=4).batch_indices(0) != batches[0]

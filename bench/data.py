"""Data at scale: tokenizing a large text corpus, and the memory of a run that trains on it.

    python bench/data.py [--size-mb 1024] [--old-hf-size-mb 64] [--rounds 1] [--workdir DIR]

Generates a text corpus of --size-mb (random English-like words in lines, seeded, so every
invocation writes the same text) and a small byte-level BPE tokenizer trained on a slice of
it, then measures, each contender in a process of its own:

- tokenizing, first run (an empty token cache): lmrunner's chunked, memory-mapped path
  against the implementation before it (the whole file read into one str and tokenized in
  one call into an int64 tensor), for the character vocabulary and for the BPE tokenizer.
  The one-call BPE path holds Python lists of every token id, so it runs on
  --old-hf-size-mb only; the new path is measured at that size too, like for like;
- the size of the token cache;
- the peak RSS of a 20-step training run on the whole corpus (cache filled): lmrunner as
  installed, with the character vocabulary and with the BPE tokenizer (tokenizer=DIR),
  against the one-call path (the text and its int64 ids held, then 20 steps of the same
  model on windows of them).

Prints every figure, the ratios, the machine and torch's version, and the targets: a 20-step
run's peak RSS under 1.5 GB on a 1 GB corpus, first-run tokenizing at least 4x the one-call
rate. Rounds take turns between contenders; min and median are over rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine, load_average, verdict  # noqa: E402  bench/ is on the path

PEAK_RSS_TARGET_MB = 1536  # a 20-step run on a 1 GB corpus
TOKENIZE_SPEEDUP_TARGET = 4.0  # first-run tokenizing against the one-call rate
TRAIN_ARGS = ["n_layers=2", "d_model=64", "n_heads=2", "d_ff=256", "max_seq_len=128", "batch_size=8", "dropout=0.0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--old-hf-size-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lmrunner-bench-data")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.workdir / f"corpus-{args.size_mb}mb.txt", args.size_mb)
    small = make_corpus(args.workdir / f"corpus-{args.old_hf_size_mb}mb.txt", args.old_hf_size_mb)
    tokenizer = make_tokenizer(args.workdir / "bpe", small)
    print(describe_machine())
    print(f"python {platform.python_version()}")
    print(f"corpus: {corpus} ({corpus.stat().st_size / 2**20:,.0f} MB); BPE tokenizer: {tokenizer}")

    contenders = {
        "char, lmrunner": ("new", corpus, None),
        "char, one call": ("old", corpus, None),
        f"BPE, lmrunner ({args.old_hf_size_mb} MB)": ("new", small, tokenizer),
        f"BPE, one call ({args.old_hf_size_mb} MB)": ("old", small, tokenizer),
        "BPE, lmrunner": ("new", corpus, tokenizer),
    }
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (kind, path, tok) in contenders.items():
            results[name].append(run_child(tokenize_script(kind, path, tok, args.workdir / "cache" / name)))
    print("\ntokenizing, first run (empty cache)")
    print(f"{'contender':34} {'min s':>8} {'median s':>9} {'MB/s':>7} {'peak RSS MB':>12} {'cache MB':>9}")
    for name, rows in results.items():
        seconds = [r["seconds"] for r in rows]
        size_mb = contenders[name][1].stat().st_size / 2**20
        cache = rows[0].get("cache_mb")
        print(
            f"{name:34} {min(seconds):8.1f} {statistics.median(seconds):9.1f} {size_mb / min(seconds):7.1f} "
            f"{max(r['peak_rss_mb'] for r in rows):12,.0f} {'-' if cache is None else f'{cache:,.0f}':>9}"
        )
    rate = lambda name: contenders[name][1].stat().st_size / min(r["seconds"] for r in results[name])  # noqa: E731
    char_ratio = rate("char, lmrunner") / rate("char, one call")
    bpe_ratio = rate(f"BPE, lmrunner ({args.old_hf_size_mb} MB)") / rate(f"BPE, one call ({args.old_hf_size_mb} MB)")
    target = f">= {TOKENIZE_SPEEDUP_TARGET:.0f}x"
    print(
        f"char: lmrunner is {char_ratio:.1f}x the one-call rate ({target}: {verdict(char_ratio >= TOKENIZE_SPEEDUP_TARGET)})"
    )
    print(
        f"BPE ({args.old_hf_size_mb} MB, like for like): lmrunner is {bpe_ratio:.1f}x the one-call rate "
        f"({target}: {verdict(bpe_ratio >= TOKENIZE_SPEEDUP_TARGET)})"
    )

    print(f"\n20 training steps on the whole corpus ({corpus.stat().st_size / 2**20:,.0f} MB, cache filled): peak RSS")
    for name, script, new in (
        ("char, lmrunner", train_script("new", corpus, args.workdir / "cache" / "char, lmrunner"), True),
        ("BPE, lmrunner", train_script("new", corpus, args.workdir / "cache" / "BPE, lmrunner", tokenizer), True),
        ("char, one call", train_script("old", corpus, None), False),
    ):
        row = run_child(script)
        under = f" (< {PEAK_RSS_TARGET_MB:,} MB: {verdict(row['peak_rss_mb'] < PEAK_RSS_TARGET_MB)})" if new else ""
        print(f"{name:34} peak RSS {row['peak_rss_mb']:8,.0f} MB  ({row['seconds']:.1f} s){under}")
    print(f"at the end: {load_average()}")


def make_corpus(path: Path, size_mb: int) -> Path:
    if path.is_file() and path.stat().st_size >= size_mb * 2**20:
        return path
    import numpy as np

    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "ve", "do", "pa", "zu", "ri", "en", "ol", "ar"]
    words = np.array(["".join(rng.choice(syllables, size=n)) for n in rng.integers(1, 4, size=4000)])
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        written = 0
        while written < size_mb * 2**20:
            lines = [" ".join(words[rng.integers(0, len(words), size=12)]).capitalize() + "." for _ in range(20_000)]
            block = "\n".join(lines) + "\n"
            handle.write(block)
            written += len(block)
    partial.rename(path)
    return path


def make_tokenizer(directory: Path, corpus: Path) -> Path:
    if (directory / "tokenizer.json").is_file():
        return directory
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    with corpus.open(encoding="utf-8") as handle:
        bpe.train_from_iterator([handle.read(4 * 2**20)], trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(str(directory))
    return directory


# The character path before the token cache: the vocabulary from the whole text, a check for
# unknown characters, and a byte lookup table into one int64 tensor (ASCII text).
OLD_CHAR_ENCODE = textwrap.dedent(
    """
    def old_char_ids(text):
        chars = sorted(set(text))
        index = {ch: i for i, ch in enumerate(chars)}
        assert not set(text) - index.keys()
        table = torch.zeros(128, dtype=torch.int64)
        for ch, i in index.items():
            table[ord(ch)] = i
        return table[torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8).long()]
    """
)
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"


def tokenize_script(kind: str, corpus: Path, tokenizer: Path | None, cache: Path) -> str:
    if kind == "old":
        load = (
            f"{OLD_CHAR_ENCODE}\ntext = open(CORPUS, encoding='utf-8').read()\nids = old_char_ids(text)\n"
            if tokenizer is None
            else "from transformers import AutoTokenizer\n"
            "text = open(CORPUS, encoding='utf-8').read()\n"
            "tok = AutoTokenizer.from_pretrained(TOKENIZER)\n"
            "ids = torch.tensor(tok(text, add_special_tokens=False, verbose=False)['input_ids'], dtype=torch.int64)\n"
        )
        body = f"{load}result = {{'tokens': len(ids)}}\n"
    else:
        body = textwrap.dedent(
            f"""
            import shutil
            shutil.rmtree({str(cache)!r}, ignore_errors=True)
            os.environ['LMRUNNER_CACHE'] = {str(cache)!r}
            from trainer.config.schema import TrainingConfig
            from trainer.data.char_tokenizer import CharTokenizer
            from trainer.data.prepare import char_vocabulary, open_data, prepare_data
            from trainer.data.tokenizers import load_tokenizer
            config = TrainingConfig(data_path=CORPUS, max_seq_len=128)
            spec = open_data(config)
            tok = load_tokenizer(Path(TOKENIZER)) if TOKENIZER else CharTokenizer(char_vocabulary(config, spec))
            data = prepare_data(config, spec, tok, 128)
            size = sum(f.stat().st_size for f in Path(data.info['token_cache']).iterdir()) / 2**20
            result = {{'tokens': data.info['tokens'], 'cache_mb': size}}
            """
        )
    return _wrap(body, corpus, tokenizer)


def train_script(kind: str, corpus: Path, cache: Path | None, tokenizer: Path | None = None) -> str:
    if kind == "new":
        extra = [f"tokenizer={tokenizer}"] if tokenizer else []
        body = textwrap.dedent(
            f"""
            os.environ['LMRUNNER_CACHE'] = {str(cache)!r}
            os.chdir(tempfile.mkdtemp())
            from trainer.cli.main import main
            code = main(['--data', CORPUS, '--max-steps', '20', 'checkpoint_cadence=null', *{TRAIN_ARGS + extra!r}])
            assert code == 0, code
            result = {{}}
            """
        )
    else:  # the one-call pipeline: the whole text, then its int64 ids, then windows of them
        body = OLD_CHAR_ENCODE + textwrap.dedent(
            """
            from trainer.data.windows import WindowDataset, split_stream
            from trainer.models.transformer import Transformer, TransformerShape
            text = open(CORPUS, encoding='utf-8').read()
            ids = old_char_ids(text)
            train, _ = split_stream(ids, 0.95)
            windows = WindowDataset(train, 128)
            model = Transformer(TransformerShape(int(ids.max()) + 1, 2, 64, 2, 256, 128, 0.0))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))  # its epoch
            for step in range(20):
                picks = order[step * 8 : (step + 1) * 8].tolist()
                x, y = (torch.stack(t) for t in zip(*(windows[i] for i in picks)))
                loss = model(x, y)[1]
                loss.backward(); optimizer.step(); optimizer.zero_grad()
            result = {}
            """
        )
    return _wrap(body, corpus, None)


def _wrap(body: str, corpus: Path, tokenizer: Path | None) -> str:
    return (
        "import json, os, sys, tempfile, time\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(REPO)!r})\nimport torch\n"
        f"CORPUS = {str(corpus)!r}\nTOKENIZER = {str(tokenizer) if tokenizer else None!r}\n"
        "started = time.perf_counter()\n"
        f"{body}\n"
        "result['seconds'] = time.perf_counter() - started\n"
        f"result['peak_rss_mb'] = {PEAK}\n"
        "print('RESULT ' + json.dumps(result))\n"
    )


def run_child(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"a contender failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - started:.0f} s)")

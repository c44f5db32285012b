"""Wall time of the quick commands next to importing torch, in one run.

    python bench/registry_cli.py [--repeats 5]

Builds a throwaway registry with one small model (a local Hugging Face directory written
with safetensors alone), then times, as fresh processes: `python main.py --help`,
`list-models`, `model-info NAME`, `generate --help`, `chat --help`, `evaluate --help`, and
`python -c "import torch"`. Prints the median of each. None of these commands may import
torch or transformers; this shows what that buys.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from timing import median_seconds  # bench/timing.py: python bench/X.py puts bench/ on the path

MAIN = Path(__file__).resolve().parent.parent / "main.py"


def make_model(directory: Path) -> None:
    directory.mkdir()
    config = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128}
    (directory / "config.json").write_text(json.dumps(config))
    save_file({"embed.weight": np.zeros((128, 64), dtype=np.float32)}, str(directory / "model.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        make_model(cwd / "bench-model")
        subprocess.run(
            [sys.executable, str(MAIN), "import-model", "bench-model"], cwd=cwd, check=True, capture_output=True
        )
        commands = {
            "python main.py --help": [sys.executable, str(MAIN), "--help"],
            "python main.py list-models": [sys.executable, str(MAIN), "list-models"],
            "python main.py model-info bench-model": [sys.executable, str(MAIN), "model-info", "bench-model"],
            **{
                f"python main.py {c} --help": [sys.executable, str(MAIN), c, "--help"]
                for c in ("generate", "chat", "evaluate")
            },
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
        }
        print(f"median of {args.repeats} fresh processes each:")
        for label, command in commands.items():
            print(f"  {label:<42} {median_seconds(command, cwd, args.repeats):6.3f} s")


if __name__ == "__main__":
    main()

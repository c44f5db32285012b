"""Where lmrunner keeps what it can rebuild: $LMRUNNER_CACHE, else ~/.cache/lmrunner.

Under it: the built-in corpus (builtin-corpus-*.txt) and tokenized data (tokens/). Deleting
the folder only costs the next run the time to rebuild what it needs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LMRUNNER_CACHE") or Path.home() / ".cache" / "lmrunner")

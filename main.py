"""lmrunner's entry point from a source checkout: ``python main.py ...``.

Installed, the same command is ``lmrunner ...``; both call ``trainer.cli.main.main``.
"""

import sys

from trainer.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

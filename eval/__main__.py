"""``python -m eval COMMAND ...``: see eval/cli.py."""

import sys

from eval.cli import main

if __name__ == "__main__":
    sys.exit(main())

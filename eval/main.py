"""Evaluate a checkpoint: ``accelerate launch eval/main.py --checkpoint URL --data URL --split test ...``.

The launcher's entry point for ``python -m eval evaluate`` (eval/evaluate.py says what it does);
also runs as plain ``python eval/main.py``.
"""

import sys

from eval.cli import main as eval_main


def main(argv: list[str] | None = None) -> int:
    return eval_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

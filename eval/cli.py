"""``python -m eval {evaluate, score, leaderboard, watch, tune, lm, average, transcribe, export}``: one parser, one
module per command, every ``Url`` argument access-checked before any work.

    python -m eval evaluate --checkpoint URL [--checkpoint URL ...] --data URL [--split test] [--beam 50]
        [--submission URL] [--leaderboard URL] [--combine probs|log_probs] [--max-params N]
    python -m eval score SUBMISSION SOLUTION
    python -m eval leaderboard URL [--html PAGE]
    python -m eval watch --runs URL --data URL --leaderboard URL [--html PAGE] [--split dev] [--every S | --once]
    python -m eval tune --checkpoint URL --data URL --lm URL --alpha a:b:s --beta c:d:s --out URL
    python -m eval lm --data URL --order N --out URL
    python -m eval average --run URL (--last K | --best K | --epochs A-B) --out URL
    python -m eval transcribe (--checkpoint URL | --model FILE.onnx) INPUT... [--beam 50] [--lm URL --alpha A --beta B]
    python -m eval export --checkpoint URL --format onnx|torchscript --out FILE

Each command's module declares its arguments (``add_arguments``) and does its work (``run``); only
the module of the command given is imported, so ``transcribe --model FILE.onnx`` runs without torch.
A user's mistake (shards.errors.UserError, a missing file, a lasting outage) is one ``error:`` line
and exit 2; anything else is a bug and keeps its traceback.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable

from eval.options import urls_in
from shards import s3

COMMANDS: dict[str, tuple[str, str]] = {  # name: (summary, the module with add_arguments and run)
    "evaluate": ("a checkpoint's submission, score and leaderboard row", "eval.evaluate"),
    "score": ("score a submission CSV against a solution CSV", "eval.score"),
    "leaderboard": ("print a leaderboard, best first", "eval.page"),
    "watch": ("evaluate checkpoints that have no leaderboard row yet", "eval.watch"),
    "tune": ("grid-search the LM weight and phoneme bonus on dev", "eval.tune"),
    "lm": ("estimate a phoneme n-gram (ARPA) from the train split", "eval.lm"),
    "average": ("one model.pt from several of a run's checkpoints, averaged", "eval.average_checkpoints"),
    "transcribe": (
        "a model's phonemes for MFCC .npy files, folders of them, or audio files",
        "eval.transcribe",
    ),
    "export": (
        "a model (or an ensemble) as an ONNX or TorchScript file with its normalisation inside",
        "eval.export",
    ),
}


def command_module(name: str):
    return importlib.import_module(COMMANDS[name][1])


def parser(described: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """Every command, with the arguments of those ``described`` (their modules imported)."""
    top = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    described = set(described)
    for name, (summary, _) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name in described:
            command_module(name).add_arguments(command)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    given = next((a for a in argv if not a.startswith("-")), None)  # the command: no option comes before it
    args = parser([given] if given in COMMANDS else []).parse_args(argv)
    urls = urls_in(args)
    try:
        for url in urls:  # credentials, bucket, endpoint: one line before any work
            s3.check_access(url)
        return command_module(args.command).run(args)
    except Exception as error:
        return s3.refused(error, urls)

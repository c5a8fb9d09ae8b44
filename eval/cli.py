"""``python -m eval {evaluate, score, leaderboard, watch, tune, lm, average, transcribe, export}``: one parser, one
handler per command, every ``Url`` argument access-checked before any work.

    python -m eval evaluate --checkpoint URL [--checkpoint URL ...] --data URL [--split test] [--beam 50]
        [--submission URL] [--leaderboard URL] [--combine probs|log_probs] [--max-params N]
    python -m eval score SUBMISSION SOLUTION
    python -m eval leaderboard URL [--html PAGE]
    python -m eval watch --runs URL --data URL --leaderboard URL [--html PAGE] [--split dev] [--every S | --once]
    python -m eval tune --checkpoint URL --data URL --lm URL --alpha a:b:s --beta c:d:s --out URL
    python -m eval lm --data URL --order N --out URL
    python -m eval average --run URL (--last K | --best K | --epochs A-B) --out URL
    python -m eval transcribe --checkpoint URL INPUT... [--beam 50] [--lm URL --alpha A --beta B] [--format jsonl]
    python -m eval export --checkpoint URL --format onnx|torchscript --out FILE

A user's mistake (shards.errors.UserError, a missing file, a lasting outage) is one ``error:``
line and exit 2; anything else is a bug and keeps its traceback.
"""

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable

from eval import average_checkpoints, evaluate, export, leaderboard, lm, page, transcribe, tune, watch
from eval.options import Decoding, Url, add_weights_argument, request_of, urls_in
from shards import s3
from shards.kaggle import PUBLIC_SHARE, read_labels
from train.metric import boards


def run_evaluate(args: argparse.Namespace) -> int:
    row = evaluate.evaluate(request_of(evaluate.Evaluation, args))
    if row is not None:
        print(json.dumps(row))
    return 0


@dataclasses.dataclass(frozen=True)
class Scoring:
    submission: str
    solution: str
    public_share: float = PUBLIC_SHARE


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", type=Url)
    parser.add_argument("solution", type=Url)
    parser.add_argument(
        "--public-share", type=float, default=Scoring.public_share, help="share of rows on the public board"
    )


def run_score(args: argparse.Namespace) -> int:
    request = request_of(Scoring, args)
    scores = boards(
        read_labels(request.submission),
        read_labels(request.solution),
        request.submission,
        request.public_share,
    )
    result = scores["all"]
    print(
        f"{request.submission}: mean Levenshtein distance {result.mean_distance:.4f}, "
        f"PER {result.per:.4%}, {result.utterances} utterances; public board "
        f"{scores['public'].mean_distance:.4f} ({scores['public'].utterances}), private "
        f"{scores['private'].mean_distance:.4f} ({scores['private'].utterances})"
    )
    return 0


@dataclasses.dataclass(frozen=True)
class Board:
    url: str
    html: str | None = None


def add_board_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", type=Url)
    parser.add_argument(
        "--html", type=Url, help="also write the board as a self-contained page here (local or URL)"
    )


def run_leaderboard(args: argparse.Namespace) -> int:
    request = request_of(Board, args)
    rows = leaderboard.ranked(leaderboard.read(request.url))
    columns = [c for c in leaderboard.COLUMNS if c not in ("time", "checkpoint", "step")] + ["time"]
    print(" ".join(f"{c:>14}" for c in ["rank", *columns]))
    for rank, row in enumerate(rows, start=1):
        print(" ".join(f"{v:>14}" for v in [str(rank), *(str(row[c]) for c in columns)]))
    if request.html:
        page.publish(request.url, request.html)
        print(f"page: {request.html}")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    return watch.watch(request_of(watch.Watch, args))


def run_tune(args: argparse.Namespace) -> int:
    decoding = request_of(Decoding, args, alpha=Decoding.alpha, beta=Decoding.beta)  # the grid's instead
    result = tune.tune(request_of(tune.Tuning, args, decoding=decoding))
    if result is not None:
        print(json.dumps(result))
    return 0


@dataclasses.dataclass(frozen=True)
class Estimation:
    data: str  # a dataset: its train split is counted, its dev split measured
    out: str  # where the ARPA file is published
    order: int = 4


def add_lm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Url, required=True, help="dataset URL (its train and dev splits)")
    parser.add_argument("--order", type=int, default=Estimation.order)
    parser.add_argument("--out", type=Url, required=True, help="where to write the ARPA file (local or URL)")


def run_lm(args: argparse.Namespace) -> int:
    request = request_of(Estimation, args)
    print(json.dumps(lm.build(request.data, request.order, request.out)))
    return 0


def add_average_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", type=Url, required=True, help="run folder (<run>/checkpoints/epoch-*/model.pt)"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=_at_least_one, help="the newest K epoch checkpoints")
    which.add_argument("--best", type=_at_least_one, help="the K with the lowest dev distance")
    which.add_argument("--epochs", help="epochs A-B, both included")
    parser.add_argument(
        "--out", type=Url, required=True, help="where to write the averaged model.pt (local or URL)"
    )
    add_weights_argument(parser)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count of at least 1")
    return int(text)


def run_average(args: argparse.Namespace) -> int:
    print(json.dumps(average_checkpoints.average(request_of(average_checkpoints.Averaging, args))))
    return 0


def run_transcribe(args: argparse.Namespace) -> int:
    return transcribe.transcribe(request_of(transcribe.Transcription, args))


def run_export(args: argparse.Namespace) -> int:
    print(json.dumps(export.export(request_of(export.Exporting, args))))
    return 0


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "evaluate": (
        "a checkpoint's submission, score and leaderboard row",
        evaluate.add_arguments,
        run_evaluate,
    ),
    "score": ("score a submission CSV against a solution CSV", add_scoring_arguments, run_score),
    "leaderboard": ("print a leaderboard, best first", add_board_arguments, run_leaderboard),
    "watch": ("evaluate checkpoints that have no leaderboard row yet", watch.add_arguments, run_watch),
    "tune": ("grid-search the LM weight and phoneme bonus on dev", tune.add_arguments, run_tune),
    "lm": ("estimate a phoneme n-gram (ARPA) from the train split", add_lm_arguments, run_lm),
    "average": (
        "one model.pt from several of a run's checkpoints, averaged",
        add_average_arguments,
        run_average,
    ),
    "transcribe": (
        "a model's phonemes for MFCC .npy files, folders of them, or audio files",
        transcribe.add_arguments,
        run_transcribe,
    ),
    "export": (
        "a model (or an ensemble) as an ONNX or TorchScript file with its normalisation inside",
        export.add_arguments,
        run_export,
    ),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments, _) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=summary, description=summary))
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    urls = urls_in(args)
    try:
        for url in urls:  # credentials, bucket, endpoint: one line before any work
            s3.check_access(url)
        return COMMANDS[args.command][2](args)
    except Exception as error:
        return s3.refused(error, urls)

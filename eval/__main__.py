"""``python -m eval score|leaderboard|watch|lm``: Kaggle-style scoring, the ranked board, scheduled
evaluation, phoneme language models.

    python -m eval score SUBMISSION SOLUTION
    python -m eval leaderboard URL [--html PAGE]
    python -m eval watch --runs URL --data URL --leaderboard URL [--html PAGE] [--split dev] [--beam 50] [--every S | --once]

    python -m eval transcribe --checkpoint URL INPUT... [--beam 50] [--lm URL --alpha A --beta B] [--format jsonl] [--accept-shift]
    python -m eval lm --data URL --order N --out URL
    python -m eval tune --checkpoint URL --data URL --lm URL --alpha a:b:s --beta c:d:s --out URL

``watch`` finds every ``<runs>/<run>/checkpoints/epoch-*/model.pt`` that has no leaderboard row
for its split and beam yet, and evaluates it (one process; cron it with ``--once``).
"""

import argparse
import json
import logging
import sys
import time

import fsspec

from eval import leaderboard, lm, page
from eval.main import DECODING_OPTIONS, add_decoding_arguments, add_lm_weights, decoding_cells, evaluate
from eval.main import parse_args as parse_eval_args
from eval.transcribe import add_arguments as add_transcribe_arguments
from eval.transcribe import transcribe
from eval.tune import grid, tune
from shards import s3
from shards.errors import UserError
from shards.kaggle import read_labels
from shards.retry import with_retries
from train.metric import score

log = logging.getLogger("eval.watch")


def new_checkpoints(runs: str, board: str, split: str, beam: int, decoding: dict) -> list[str]:
    """Checkpoints under ``runs`` without a leaderboard row for (split, beam, LM and weights), oldest
    run and epoch first."""
    fs, root = fsspec.core.url_to_fs(runs)
    found = sorted(fs.glob(f"{root.rstrip('/')}/*/checkpoints/epoch-*/model.pt"))
    prefix = runs.split("://", 1)[0] + "://" if "://" in runs else ""
    cells = {k: str(v) for k, v in decoding.items()}
    done = {
        (r["checkpoint"], r["split"], r["beam"], r["lm"], r["alpha"], r["beta"])
        for r in leaderboard.read(board)
    }
    urls = [prefix + path for path in found]
    return [
        url for url in urls if (url, split, str(beam), cells["lm"], cells["alpha"], cells["beta"]) not in done
    ]


def watch(args: argparse.Namespace) -> int:
    while True:
        cells = decoding_cells(args.lm, args.alpha, args.beta)
        for url in new_checkpoints(args.runs, args.leaderboard, args.split, args.beam, cells):
            log.info("evaluating %s", url)
            decoding = [
                f"--{o.replace('_', '-')}={getattr(args, o)}"
                for o in DECODING_OPTIONS
                if getattr(args, o) is not None
            ]
            eval_args = parse_eval_args(
                ["--checkpoint", url, "--data", args.data, "--split", args.split, *decoding]
                + ["--leaderboard", args.leaderboard]
                + (["--solution", args.solution] if args.solution else [])
            )
            try:
                evaluate(eval_args)
            except (UserError, OSError) as error:  # one bad checkpoint must not stop the watch; a bug does
                log.error("%s: %s", url, error)
                continue
            if args.html:
                with_retries(lambda: page.publish(args.leaderboard, args.html), args.html, args.io_deadline_s)
        if args.once:
            return 0
        time.sleep(args.every)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scoring = commands.add_parser("score", help="score a submission CSV against a solution CSV")
    scoring.add_argument("submission")
    scoring.add_argument("solution")
    board = commands.add_parser("leaderboard", help="print a leaderboard, best first")
    board.add_argument("url")
    board.add_argument("--html", help="also write the board as a self-contained page here (local or URL)")
    watching = commands.add_parser("watch", help="evaluate checkpoints that have no leaderboard row yet")
    watching.add_argument("--runs", required=True, help="URL holding run folders (<run>/checkpoints/...)")
    watching.add_argument("--data", required=True)
    watching.add_argument("--leaderboard", required=True)
    watching.add_argument("--split", default="dev")
    add_decoding_arguments(watching)
    add_lm_weights(watching)
    watching.add_argument("--solution")
    watching.add_argument("--html", help="rewrite this leaderboard page after each new row (local or URL)")
    when = watching.add_mutually_exclusive_group()
    when.add_argument("--every", type=float, default=600, help="seconds between looks")
    when.add_argument("--once", action="store_true")
    tuning = commands.add_parser("tune", help="grid-search the LM weight and phoneme bonus on dev")
    tuning.add_argument(
        "--checkpoint", required=True, help="URL of a model.pt, or of a run folder (its latest)"
    )
    tuning.add_argument("--data", required=True)
    tuning.add_argument("--split", default="dev")
    add_decoding_arguments(tuning)
    tuning.add_argument("--alpha", type=grid, default="0:1:0.25", help="LM weights, start:stop:step")
    tuning.add_argument("--beta", type=grid, default="0:2:0.5", help="bonuses per phoneme, start:stop:step")
    tuning.add_argument("--out", required=True, help="folder for tune.csv and tune.png (local or URL)")
    transcribing = commands.add_parser(
        "transcribe", help="a model's phonemes for MFCC .npy files, folders of them, or audio files"
    )
    add_transcribe_arguments(transcribing)
    modelling = commands.add_parser("lm", help="estimate a phoneme n-gram (ARPA) from the train split")
    modelling.add_argument("--data", required=True, help="dataset URL (its train and dev splits)")
    modelling.add_argument("--order", type=int, default=4)
    modelling.add_argument("--out", required=True, help="where to write the ARPA file (local or URL)")
    args = parser.parse_args(argv)
    names = (
        "submission",
        "solution",
        "url",
        "runs",
        "data",
        "leaderboard",
        "out",
        "lm",
        "checkpoint",
        "html",
    )
    urls = [getattr(args, name, None) for name in names] + getattr(args, "inputs", [])
    try:
        for url in filter(None, urls):  # credentials, bucket, endpoint: one line before any work
            s3.check_access(url)
        if args.command == "tune":
            if args.lm is None:
                raise UserError("tune needs --lm (an ARPA file: python -m eval lm)")
            result = tune(args)
            if result is not None:
                print(json.dumps(result))
            return 0
        if args.command == "transcribe":
            return transcribe(args)
        if args.command == "lm":
            print(json.dumps(lm.build(args.data, args.order, args.out)))
            return 0
        if args.command == "score":
            result = score(read_labels(args.submission), read_labels(args.solution), args.submission)
            print(
                f"{args.submission}: mean Levenshtein distance {result.mean_distance:.4f}, "
                f"PER {result.per:.4%}, {result.utterances} utterances"
            )
            return 0
        if args.command == "leaderboard":
            rows = leaderboard.ranked(leaderboard.read(args.url))
            columns = [c for c in leaderboard.COLUMNS if c not in ("time", "checkpoint", "step")] + ["time"]
            print(" ".join(f"{c:>14}" for c in ["rank", *columns]))
            for rank, row in enumerate(rows, start=1):
                print(" ".join(f"{v:>14}" for v in [str(rank), *(str(row[c]) for c in columns)]))
            if args.html:
                page.publish(args.url, args.html)
                print(f"page: {args.html}")
            return 0
        return watch(args)
    except Exception as error:
        return s3.refused(error, urls)


if __name__ == "__main__":
    sys.exit(main())

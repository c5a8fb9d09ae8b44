"""``python -m eval watch --runs URL --data URL --leaderboard URL [--every S | --once]``: scheduled
evaluation.

Each look finds every ``<runs>/<run>/checkpoints/epoch-*/model.pt`` that has no leaderboard row for
its split, beam, LM and weights yet, and evaluates it in this process (cron it with ``--once``). One
bad checkpoint is logged and skipped; a bug stops the watch. With ``--checkpoint`` (repeatable),
each new checkpoint is evaluated in an ensemble with those models (eval/ensemble.py), a row per
ensemble.
"""

import argparse
import dataclasses
import logging
import time

from eval import leaderboard, page
from eval.ensemble import resolved
from eval.evaluate import Evaluation, evaluate
from eval.options import (
    Decoding,
    Models,
    Reading,
    Url,
    add_decoding_arguments,
    add_models_arguments,
    add_reading_arguments,
    request_of,
)
from shards.errors import UserError
from shards.retry import with_retries
from shards.store import glob_urls
from train.checkpoint import CHECKPOINTS

log = logging.getLogger("eval.watch")


@dataclasses.dataclass(frozen=True)
class Watch:
    runs: str  # holds run folders (<run>/checkpoints/...)
    data: str
    leaderboard: str
    split: str = "dev"
    models: Models = Models(())  # the checkpoints each new one joins in an ensemble (none: alone)
    decoding: Decoding = Decoding()
    reading: Reading = Reading()
    solution: str | None = None
    html: str | None = None  # the board's page, rewritten after each new row
    every: float = 600.0  # seconds between looks
    once: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=Url, required=True, help="URL holding run folders (<run>/checkpoints/...)"
    )
    parser.add_argument("--data", type=Url, required=True)
    parser.add_argument("--leaderboard", type=Url, required=True)
    parser.add_argument("--split", default=Watch.split)
    add_models_arguments(
        parser,
        required=False,
        help="a model.pt or run folder each new checkpoint joins in an ensemble (repeatable)",
    )
    add_decoding_arguments(parser)
    add_reading_arguments(parser)
    parser.add_argument("--solution", type=Url)
    parser.add_argument(
        "--html", type=Url, help="rewrite this leaderboard page after each new row (local or URL)"
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--every", type=float, default=Watch.every, help="seconds between looks")
    when.add_argument("--once", action="store_true")


def new_checkpoints(request: Watch) -> list[str]:
    """Checkpoints under ``runs`` without a leaderboard row for (the checkpoint with the ensemble's
    other members; split, beam, LM and its weights; the model weights asked for: ``auto`` is met by a
    row of either; how an ensemble combines), oldest run and epoch first."""
    found = glob_urls(f"{request.runs.rstrip('/')}/*/{CHECKPOINTS}/epoch-*/model.pt")
    cells = {k: str(v) for k, v in request.decoding.cells().items()}
    partners = resolved(request.models).checkpoints  # their latest model.pt, read once per look
    combine = request.models.combine if partners else ""
    wanted = (request.split, str(request.decoding.beam), cells["lm"], cells["alpha"], cells["beta"], combine)
    weights = request.models.weights
    done = {
        (r["checkpoint"], r["split"], r["beam"], r["lm"], r["alpha"], r["beta"], r["combine"])
        for r in leaderboard.read(request.leaderboard)
        if weights == "auto" or all(w == weights for w in (r["weights"] or "live").split(leaderboard.MEMBERS))
    }  # older rows: live weights, no ensemble
    return [url for url in found if (leaderboard.joined((url, *partners)), *wanted) not in done]


def models_of(request: Watch, checkpoint: str) -> Models:
    """The model a new checkpoint is evaluated as: alone, or first in the ensemble with the others."""
    partners = resolved(request.models).checkpoints
    return dataclasses.replace(request.models, checkpoints=(checkpoint, *partners))


def evaluation_of(request: Watch, checkpoint: str) -> Evaluation:
    return Evaluation(
        models=models_of(request, checkpoint),
        data=request.data,
        split=request.split,
        decoding=request.decoding,
        reading=request.reading,
        solution=request.solution,
        leaderboard=request.leaderboard,
    )


def publish_page(request: Watch) -> None:
    html, board = request.html, request.leaderboard
    with_retries(lambda: page.publish(board, html), html, request.reading.io_deadline_s)


def watch(request: Watch) -> int:
    while True:
        for url in new_checkpoints(request):
            log.info("evaluating %s", url)
            try:
                evaluate(evaluation_of(request, url))
            except (UserError, OSError) as error:  # one bad checkpoint must not stop the watch; a bug does
                log.error("%s: %s", url, error)
                continue
            if request.html:
                publish_page(request)
        if request.once:
            return 0
        time.sleep(request.every)


def run(args: argparse.Namespace) -> int:
    return watch(request_of(Watch, args))

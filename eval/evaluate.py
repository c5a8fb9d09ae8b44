"""``python -m eval evaluate --checkpoint URL --data URL --split test ...`` (also ``accelerate launch
eval/main.py ...``): a checkpoint's submission, score and leaderboard row for one split; with
``--checkpoint`` repeated, an ensemble's (eval/ensemble.py).

Each rank decodes a disjoint share of the split (the reader's plan; repeats that only even out
batch counts are ignored); rank 0 gathers ``(id, prediction)``, checks that every id of the split's
manifest appears exactly once, writes the submission in ``test_order.csv`` order (sorted ids for
splits without one) with Kaggle's positional ids and the id table beside it, scores it when
references exist (a labelled split, or ``--solution``) and appends a row to the leaderboard.
Utterances the pipeline rejected keep their row, with an empty prediction.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import time
from collections import Counter
from typing import NamedTuple

import fsspec
from accelerate import Accelerator
from accelerate.utils import gather_object

from eval import leaderboard
from eval.ensemble import Ensemble, parameter_count, resolved
from eval.model import chosen_weights, run_name
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
from eval.ranks import forward, model_and_share, ranks
from shards import manifest
from shards.kaggle import HEADERS, PUBLIC_SHARE, ids_bytes, ids_name, labels_bytes, read_labels
from shards.manifest import DatasetError
from shards.reader import BatchStream
from shards.retry import with_retries
from shards.store import publish_at
from shards.vocab import to_string
from train.checkpoint import ModelCard
from train.metric import Score, boards, score
from train.model import CTCModel

log = logging.getLogger("eval")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One model (a checkpoint, or an ensemble) on one split: what to decode, how, and where the
    results go."""

    models: Models
    data: str
    split: str = "test"
    decoding: Decoding = Decoding()
    reading: Reading = Reading()
    submission: str | None = None
    format: str = "id,predictions"
    solution: str | None = None
    public_share: float = PUBLIC_SHARE  # of the solution's rows on Kaggle's public board
    leaderboard: str | None = None
    run: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_models_arguments(parser)
    parser.add_argument(
        "--data", type=Url, required=True, help="dataset URL (normalised with the model's statistics)"
    )
    parser.add_argument("--split", default=Evaluation.split)
    add_decoding_arguments(parser)
    add_reading_arguments(parser)
    parser.add_argument("--submission", type=Url, help="where to write the submission CSV (local or URL)")
    parser.add_argument(
        "--format", choices=sorted(HEADERS), default=Evaluation.format, help="submission header"
    )
    parser.add_argument(
        "--solution",
        type=Url,
        help="Kaggle solution CSV (id = row position in test_order.csv, label) to score against",
    )
    parser.add_argument(
        "--public-share",
        type=float,
        default=Evaluation.public_share,
        help="share of the solution's rows scored as Kaggle's public board (the rest: private)",
    )
    parser.add_argument("--leaderboard", type=Url, help="leaderboard CSV URL to append a row to")
    parser.add_argument(
        "--run",
        help="run name for the leaderboard (default: the checkpoint's run folder; an ensemble's, joined by +)",
    )


class Decoded(NamedTuple):
    id: str
    prediction: str
    reference: str | None  # None where the split has no transcripts


def evaluate(request: Evaluation) -> dict | None:
    """Decode, write and score on every rank; rank 0's leaderboard row (None on the others)."""
    request = dataclasses.replace(request, models=resolved(request.models))
    with ranks() as accelerator:
        model, cards, stream = model_and_share(
            request.models, request.data, request.split, request.reading, accelerator
        )
        started = time.monotonic()
        share = decode_share(model, stream, request, accelerator)
        seconds = max(gather_object([time.monotonic() - started]))
        decoded = gather_object(share)
        if not accelerator.is_main_process:
            return None
        return publish(request, Evaluated(cards, parameter_count(model), seconds), stream, decoded)


class Evaluated(NamedTuple):
    """What the leaderboard row says of the model and the decoding besides the scores."""

    cards: list[ModelCard]  # each checkpoint's, in --checkpoint order
    parameters: int  # all members together
    seconds: float  # the slowest rank's decoding


def decode_share(
    model: CTCModel | Ensemble, stream: BatchStream, request: Evaluation, accelerator: Accelerator
) -> list[Decoded]:
    """This rank's utterances, decoded (the plan's repeats left out)."""
    decoder = request.decoding.decoder()
    found: list[Decoded] = []
    for batch, log_probs, lengths in forward(model, stream, accelerator, f"decode {request.split}"):
        for i, hypotheses in enumerate(decoder.best(log_probs, lengths)):
            if batch.repeated[i]:
                continue
            reference = (
                None
                if batch.labels is None
                else to_string(batch.labels[i, : batch.label_lengths[i]].tolist())
            )
            found.append(Decoded(batch.ids[i], to_string(hypotheses[0].labels), reference))
    decoder.close()
    return found


def publish(request: Evaluation, evaluated: Evaluated, stream: BatchStream, decoded: list[Decoded]) -> dict:
    """Rank 0's part: every id checked once, the submission written, scored, and its row appended."""
    check_once([d.id for d in decoded], [row["id"] for row in stream.rows], f"{request.data}/{request.split}")
    predictions = {d.id: d.prediction for d in decoded}
    order, rejected = submission_order(request.data, request.split, set(predictions))
    if rejected:
        log.warning(
            "%d utterances of %s were rejected by the pipeline and get an empty prediction: %s",
            len(rejected),
            request.split,
            "; ".join(f"{i} ({reason})" for i, reason in list(rejected.items())[:10]),
        )
    rows = [predictions.get(i, "") for i in order]
    if request.submission:
        write_submission(request, order, rows)
    scores = score_submission(request, order, rows, decoded)
    row = leaderboard_row(request, evaluated, scores, len(rows), len(rejected))
    if request.leaderboard:
        board = request.leaderboard
        with_retries(lambda: leaderboard.append(board, row), board, request.reading.io_deadline_s)
    return row


def check_once(found: list[str], expected: list[str], where: str) -> None:
    """Every expected id decoded exactly once, and nothing else."""
    counts = Counter(found)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - counts.keys())
    extra = sorted(counts.keys() - set(expected))
    if duplicated or missing or extra:
        raise RuntimeError(
            f"{where}: decoded ids do not match the split: {len(missing)} missing {missing[:3]}, "
            f"{len(duplicated)} duplicated {duplicated[:3]}, {len(extra)} unknown {extra[:3]}"
        )


def _read_optional(url: str) -> bytes | None:
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def submission_order(data: str, split: str, decoded: set[str]) -> tuple[list[str], dict[str, str]]:
    """Every id the submission lists, in order, and the pipeline's rejected ones with their reasons.

    The order is the split's ``test_order.csv`` (every source id, rejected ones included), or for a
    split without one its decoded and rejected ids sorted.
    """
    root = data.rstrip("/")
    rejects = _read_optional(f"{root}/{manifest.REJECTS}")
    reasons = (
        {}
        if rejects is None
        else {
            r.id: r.reason
            for r in manifest.read_rejects(rejects, f"{root}/{manifest.REJECTS}")
            if r.split == split
        }
    )
    order_url = f"{root}/{split}/{manifest.ORDER}"
    listed = _read_optional(order_url)
    order = sorted(decoded | reasons.keys()) if listed is None else manifest.read_order(listed, order_url)
    unknown = [i for i in order if i not in decoded and i not in reasons]
    unlisted = sorted(decoded - set(order))
    if unknown or unlisted:
        raise DatasetError(
            f"{order_url}: does not match the split: {len(unknown)} listed ids are neither in a shard nor "
            f"in rejects.csv (e.g. {unknown[:3]}), {len(unlisted)} ids in shards are not listed (e.g. {unlisted[:3]})"
        )
    return order, {i: reasons[i] for i in order if i not in decoded}


def write_submission(request: Evaluation, order: list[str], predictions: list[str]) -> None:
    """The Kaggle CSV (row k = the k-th listed id) and the id table beside it."""
    submission, ids = labels_bytes(predictions, request.format), ids_bytes(order)
    deadline = request.reading.io_deadline_s
    with_retries(lambda: publish_at(request.submission, submission), request.submission, deadline)
    ids_url = ids_name(request.submission)
    with_retries(lambda: publish_at(ids_url, ids), ids_url, deadline)


def score_submission(
    request: Evaluation, order: list[str], predictions: list[str], decoded: list[Decoded]
) -> dict[str, Score]:
    """Against Kaggle's solution file (every row, rejected utterances' empty predictions included),
    on the whole and on its public and private boards; or against the shards' transcripts (only
    what was not rejected), on the whole. Empty where there are no references."""
    positional = dict(enumerate(predictions))
    if request.solution:
        return boards(positional, read_labels(request.solution), request.solution, request.public_share)
    by_id = {d.id: d.reference for d in decoded if d.reference is not None}
    references = {k: by_id[i] for k, i in enumerate(order) if i in by_id}
    if not references:
        return {}
    positional = {k: positional[k] for k in references}
    return {"all": score(positional, references, f"{request.data}/{request.split}")}


def leaderboard_row(
    request: Evaluation,
    evaluated: Evaluated,
    scores: dict[str, Score],
    utterances: int,
    rejected: int,
) -> dict:
    """The row; an ensemble's run, checkpoint, epoch, step and weights cells name each member's,
    joined by leaderboard.MEMBERS."""

    def distance(board: str) -> float | str:
        return round(scores[board].mean_distance, 4) if board in scores else ""

    models, cards = request.models, evaluated.cards
    members = list(zip(models.checkpoints, cards, strict=True))
    result = scores.get("all")
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": request.run or leaderboard.joined(map(run_name, models.checkpoints)),
        "checkpoint": leaderboard.joined(models.checkpoints),
        "epoch": leaderboard.joined(card.epoch for card in cards),
        "step": leaderboard.joined(card.step for card in cards),
        "split": request.split,
        "beam": request.decoding.beam,
        "weights": leaderboard.joined(chosen_weights(card, models.weights, url)[0] for url, card in members),
        "combine": models.combine if models.ensemble else "",
        "parameters": evaluated.parameters,
        "distance": "" if result is None else round(result.mean_distance, 4),
        "per": "" if result is None else round(result.per, 5),
        "public_distance": distance("public"),
        "private_distance": distance("private"),
        "utterances": utterances,
        "rejected": rejected,
        "decode_seconds": round(evaluated.seconds, 2),
        **request.decoding.cells(),
    }


def run(args: argparse.Namespace) -> int:
    row = evaluate(request_of(Evaluation, args))
    if row is not None:
        print(json.dumps(row))
    return 0

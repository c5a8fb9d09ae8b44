"""``python -m eval score SUBMISSION SOLUTION``: a submission CSV's mean Levenshtein distance and PER
against a solution CSV, on the whole test split and on Kaggle's two boards (shards/kaggle.py)."""

import argparse
import dataclasses

from eval.options import Url, request_of
from shards.kaggle import PUBLIC_SHARE, read_labels
from train.metric import boards


@dataclasses.dataclass(frozen=True)
class Scoring:
    submission: str
    solution: str
    public_share: float = PUBLIC_SHARE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("submission", type=Url)
    parser.add_argument("solution", type=Url)
    parser.add_argument(
        "--public-share", type=float, default=Scoring.public_share, help="share of rows on the public board"
    )


def run(args: argparse.Namespace) -> int:
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

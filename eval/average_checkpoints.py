"""``python -m eval average --run URL (--last K | --best K | --epochs A-B) --out URL``: one model
from several of a run's epoch checkpoints, their weights averaged (ESPnet's ``average_nbest_models``,
icefall's ``--epoch N --avg K``).

Every floating-point entry of the chosen weights (parameters and BatchNorm's running statistics) is
the mean over the checkpoints; integer entries (BatchNorm's batch counts) are the newest one's. The
result is a ``model.pt`` like training's, its card the newest source's with ``sources`` listing the
files averaged and no dev score (it was never validated): evaluate, transcribe, watch and tune
take it as any checkpoint. Checkpoints of another shape, vocabulary, front end or dataset
statistics cannot be averaged and are refused in one line naming the difference.
"""

import argparse
import dataclasses
import json
import re

import torch

from eval.model import chosen_dev_distance, chosen_weights, interface_differences
from eval.options import Url, add_weights_argument, request_of
from shards.errors import UserError
from shards.store import glob_urls
from train.checkpoint import CHECKPOINTS, ModelCard


class CannotAverage(UserError):
    """The checkpoints asked for do not exist, or are not of one model."""


@dataclasses.dataclass(frozen=True)
class Averaging:
    run: str  # a run folder (<run>/checkpoints/epoch-*/model.pt)
    out: str  # where the averaged model.pt goes
    last: int | None = None  # the newest K epochs
    best: int | None = None  # the K with the lowest dev distance (of the chosen weights)
    epochs: str | None = None  # A-B, both included
    weights: str = "auto"  # eval/model.py WEIGHTS, of each source


def epoch_checkpoints(run: str) -> dict[int, str]:
    """Epoch → URL of its model.pt, for every epoch checkpoint the run still keeps."""
    found = {}
    for url in glob_urls(f"{run.rstrip('/')}/{CHECKPOINTS}/epoch-*/model.pt"):
        epoch = re.search(r"epoch-(\d+)/model\.pt$", url)
        if epoch:
            found[int(epoch.group(1))] = url
    return dict(sorted(found.items()))


def _epoch_range(text: str) -> list[int]:
    match = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not match or int(match.group(1)) > int(match.group(2)):
        raise CannotAverage(f"--epochs {text!r}: expected A-B with A <= B, e.g. 10-14")
    return list(range(int(match.group(1)), int(match.group(2)) + 1))


def chosen(request: Averaging, kept: dict[int, str], cards: dict[int, ModelCard]) -> list[int]:
    """The epochs the request names, each one the run keeps, oldest first."""
    if request.epochs is not None:
        epochs = _epoch_range(request.epochs)
    else:
        count, how = (request.last, "--last") if request.last is not None else (request.best, "--best")
        distance = {e: chosen_dev_distance(cards[e], request.weights, kept[e]) for e in cards}
        candidates = list(kept) if how == "--last" else [e for e in kept if distance[e] is not None]
        if len(candidates) < count:
            raise CannotAverage(
                f"{request.run}: {how} {count} asks for more {'scored ' if how == '--best' else ''}epoch "
                f"checkpoints than the run keeps ({candidates}); raise keep_last when training, or ask for fewer"
            )
        if how == "--best":
            candidates = sorted(candidates, key=lambda e: (distance[e], -e))
        epochs = sorted(candidates[-count:] if how == "--last" else candidates[:count])
    missing = [e for e in epochs if e not in kept]
    if missing:
        raise CannotAverage(
            f"{request.run}: no checkpoint for epoch(s) {missing} (the run keeps epochs {list(kept)}; "
            "raise keep_last when training to keep more)"
        )
    return epochs


def check_one_model(cards: list[ModelCard], urls: list[str]) -> None:
    """Every card of the same model: weight shapes, and what eval.model.interface_differences compares."""
    first = cards[0]
    for card, url in zip(cards[1:], urls[1:], strict=True):
        shapes = {k: tuple(v.shape) for k, v in card.model.items()}
        expected = {k: tuple(v.shape) for k, v in first.model.items()}
        differences = ["weight names or shapes"] if shapes != expected else []
        differences += interface_differences(card, first)
        if differences:
            raise CannotAverage(
                f"{url}: not the same model as {urls[0]}: its {', '.join(differences)} differ"
            )


def mean_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Floating-point entries averaged (in float64, then their own dtype); others the newest one's."""
    averaged = {}
    for name, newest in states[-1].items():
        if newest.is_floating_point():
            total = sum(state[name].double() for state in states)
            averaged[name] = (total / len(states)).to(newest.dtype)
        else:
            averaged[name] = newest.clone()
    return averaged


def average(request: Averaging) -> dict:
    """Write the averaged model.pt; what it was made of."""
    kept = epoch_checkpoints(request.run)
    if not kept:
        raise CannotAverage(f"{request.run}: no epoch checkpoints ({CHECKPOINTS}/epoch-*/model.pt)")
    cards = {epoch: ModelCard.load(url) for epoch, url in kept.items()} if request.best else {}
    epochs = chosen(request, kept, cards)
    urls = [kept[e] for e in epochs]
    sources = [cards.get(e) or ModelCard.load(kept[e]) for e in epochs]
    check_one_model(sources, urls)
    states = [chosen_weights(card, request.weights, url)[1] for card, url in zip(sources, urls, strict=True)]
    newest = sources[-1]
    card = dataclasses.replace(
        newest,
        model=mean_weights(states),
        averaged=None,
        dev_distance=None,
        averaged_dev_distance=None,
        sources=urls,
    )
    card.publish(request.out)
    return {"out": request.out, "epochs": epochs, "sources": urls}


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    print(json.dumps(average(request_of(Averaging, args))))
    return 0

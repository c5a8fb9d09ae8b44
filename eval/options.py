"""What the eval commands share: arguments that name files or URLs, and the options of the
requests every decoding command makes (which model: :class:`Models`, loaded by eval/ensemble.py; how
to read a split: :class:`Reading`; how to decode it: eval.decode's :class:`Decoding`). Nothing here
imports torch, so a command that runs without it (eval transcribe --model FILE.onnx) can parse.

An argument declared ``type=Url`` is checked for access (credentials, bucket, endpoint) before the
command does any work: :func:`urls_in` finds every one, so a new option cannot be missed. Each
command turns its parsed arguments into a typed request with :func:`request_of`; a request's
defaults are the command line's.
"""

import argparse
import dataclasses
import logging
import typing
from typing import TypeVar

from eval.decode import Decoding
from shards.errors import UserError
from shards.plan import DEFAULT_MAX_FRAMES
from shards.retry import IO_DEADLINE_S


class Url(str):
    """A local path or an fsspec URL given on the command line."""


def urls_in(args: argparse.Namespace) -> list[str]:
    """Every ``Url`` among the parsed arguments (single or repeated), in the parser's order."""
    found = []
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Url):
                found.append(str(item))
    return found


log = logging.getLogger("eval.options")

WEIGHTS = ("auto", "live", "averaged")  # which of a model.pt's weights: auto = averaged where it has them
# an ensemble's frame posteriors (eval/ensemble.py); the first, the default, measured the better (docs/results.md)
COMBINE = ("probs", "log_probs")


@dataclasses.dataclass(frozen=True)
class Models:
    """The model a command decodes with: one checkpoint, or several as an ensemble (eval/ensemble.py)."""

    checkpoints: tuple[str, ...]  # each a model.pt, or a run folder (its latest)
    weights: str = WEIGHTS[0]  # of every member
    combine: str = COMBINE[0]  # how an ensemble's posteriors are combined
    max_params: int | None = None  # refuse a model (all members) above this many parameters

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))  # the parser gives a list

    @property
    def ensemble(self) -> bool:
        return len(self.checkpoints) > 1

    def check_size(self, parameters: int, source: str, how: str = "") -> None:
        """Log the model's parameter count (``how``: what it counts), and refuse it above ``max_params``."""
        log.info("model: %s parameters%s", f"{parameters:,}", how)
        if self.max_params is not None and parameters > self.max_params:
            raise TooManyParameters(
                f"{source}: {parameters:,} parameters, above --max-params {self.max_params:,}"
            )


class TooManyParameters(UserError):
    """The model (an ensemble: all its members) is above ``--max-params``."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a split is read: padded frames per batch, loader processes per rank, and how long an
    unreachable store is waited out (shard reads and every write)."""

    max_frames: int = DEFAULT_MAX_FRAMES
    num_workers: int = 1
    io_deadline_s: float = IO_DEADLINE_S


def add_models_arguments(parser: argparse.ArgumentParser, required: bool = True, help: str = "") -> None:
    """:class:`Models`' options: ``--checkpoint`` (repeated: an ensemble) and which weights, how an
    ensemble is combined, the parameter budget."""
    parser.add_argument(
        "--checkpoint",
        dest="checkpoints",
        type=Url,
        action="append",
        required=required,
        default=None if required else [],
        help=help or "URL of a model.pt, or of a run folder (its latest); repeat it for an ensemble",
    )
    add_weights_argument(parser)
    parser.add_argument(
        "--combine",
        choices=COMBINE,
        default=Models.combine,
        help="an ensemble's frame posteriors: the mean of the probabilities or of the log-probabilities",
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=Models.max_params,
        help="refuse a model (an ensemble: all its members) with more parameters (HW3P2: 20000000)",
    )


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=WEIGHTS[0],
        help="each checkpoint's live or averaged weights (auto: averaged where its run averaged them)",
    )


def add_decoding_arguments(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """:class:`Decoding`'s options; ``weights=False`` leaves ``--alpha``/``--beta`` to the command."""
    parser.add_argument("--beam", type=int, default=Decoding.beam, help="beam width; 1 = greedy")
    parser.add_argument(
        "--top-n", type=int, default=Decoding.top_n, help="labels per frame a beam may expand"
    )
    parser.add_argument("--decoders", type=int, default=Decoding.decoders, help="beam-search threads")
    parser.add_argument(
        "--lm", type=Url, help="phoneme n-gram, ARPA (python -m eval lm), for the beam search"
    )
    if weights:
        parser.add_argument(
            "--alpha", type=float, default=Decoding.alpha, help="LM weight (natural-log probabilities)"
        )
        parser.add_argument("--beta", type=float, default=Decoding.beta, help="bonus per phoneme")


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """:class:`Reading`'s options."""
    parser.add_argument("--max-frames", type=int, default=Reading.max_frames, help="padded frames per batch")
    parser.add_argument(
        "--num-workers", type=int, default=Reading.num_workers, help="loader processes per rank"
    )
    parser.add_argument(
        "--io-deadline-s",
        type=float,
        default=Reading.io_deadline_s,
        help="seconds an unreachable object store is waited out (shard reads, every write)",
    )


Request = TypeVar("Request")


def request_of(kind: type[Request], args: argparse.Namespace, **given) -> Request:
    """A request of ``kind`` from parsed arguments: each field from the argument of its name, or
    from ``given``; a field that is itself a request is built from the same arguments."""
    types = typing.get_type_hints(kind)
    values = {}
    for field in dataclasses.fields(kind):
        if field.name in given:
            values[field.name] = given[field.name]
        elif dataclasses.is_dataclass(types[field.name]):
            values[field.name] = request_of(types[field.name], args)
        else:
            values[field.name] = getattr(args, field.name)
    return kind(**values)

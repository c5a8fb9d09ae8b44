"""eval/options.py: the arguments every eval command shares and the typed requests made of them."""

import argparse
import dataclasses
import logging

import pytest

from eval.decode import Decoding
from eval.options import (
    Models,
    Reading,
    TooManyParameters,
    Url,
    add_decoding_arguments,
    add_models_arguments,
    add_reading_arguments,
    request_of,
    urls_in,
)
from shards.plan import DEFAULT_MAX_FRAMES
from shards.retry import IO_DEADLINE_S


@dataclasses.dataclass(frozen=True)
class _Request:
    """A command's request as eval's commands declare theirs: plain fields and nested requests."""

    models: Models
    reading: Reading
    decoding: Decoding
    submission: str | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_models_arguments(parser)
    add_reading_arguments(parser)
    add_decoding_arguments(parser)
    parser.add_argument("--submission", type=Url)
    parser.add_argument("--split", default="test")  # a plain string: never checked for access
    return parser


def test_urls_in_finds_every_url_argument_single_or_repeated_and_nothing_else():
    args = _parser().parse_args(
        ["--checkpoint", "s3://b/run-a", "--checkpoint", "runs/b", "--lm", "s3://b/lm.arpa", "--split", "dev"]
    )
    assert urls_in(args) == ["s3://b/run-a", "runs/b", "s3://b/lm.arpa"]
    args = _parser().parse_args(["--checkpoint", "m.pt", "--submission", "s3://b/sub.csv"])
    assert urls_in(args) == ["m.pt", "s3://b/sub.csv"]  # an option left unset is no URL


def test_a_request_s_defaults_are_the_command_line_s():
    """Parsing nothing but the required checkpoint gives the dataclasses' own defaults: one home each."""
    request = request_of(_Request, _parser().parse_args(["--checkpoint", "m.pt"]))
    assert request.models == Models(checkpoints=("m.pt",))
    assert request.reading == Reading()
    assert request.decoding == Decoding()
    assert request.submission is None


def test_a_request_takes_each_field_from_its_argument_nested_ones_too_and_given_values_first():
    args = _parser().parse_args(
        ["--checkpoint", "a", "--checkpoint", "b", "--combine", "log_probs", "--max-params", "20000000"]
        + ["--max-frames", "9000", "--num-workers", "3", "--beam", "7", "--alpha", "0.3", "--lm", "x.arpa"]
    )
    request = request_of(_Request, args, submission="given.csv")
    assert request.models == Models(("a", "b"), weights="auto", combine="log_probs", max_params=20_000_000)
    assert request.models.ensemble and isinstance(request.models.checkpoints, tuple)
    assert (request.reading.max_frames, request.reading.num_workers) == (9000, 3)
    assert (request.decoding.beam, request.decoding.alpha, request.decoding.lm) == (7, 0.3, "x.arpa")
    assert request.submission == "given.csv"


def test_one_checkpoint_is_no_ensemble_and_none_either():
    assert not Models(["m.pt"]).ensemble and Models(["m.pt"]).checkpoints == ("m.pt",)
    assert not Models([]).ensemble  # transcribe --model FILE.onnx: no checkpoint at all


def test_the_defaults_are_the_measured_and_documented_ones():
    # probs: the better combination on every set (docs/results.md); auto: averaged weights where a run has them
    assert (Models(("a",)).combine, Models(("a",)).weights, Models(("a",)).max_params) == (
        "probs",
        "auto",
        None,
    )
    assert Reading() == Reading(max_frames=DEFAULT_MAX_FRAMES, num_workers=1, io_deadline_s=IO_DEADLINE_S)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Models(("a",)).max_params = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reading().num_workers = 4


def test_the_checkpoint_is_required_unless_a_command_says_otherwise(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args([])
    assert "--checkpoint" in capsys.readouterr().err
    optional = argparse.ArgumentParser()
    add_models_arguments(optional, required=False, help="a checkpoint, or none with --model")
    assert optional.parse_args([]).checkpoints == []
    assert "a checkpoint, or none with --model" in optional.format_help()
    assert "repeat it for an ensemble" in _parser().format_help()


def test_check_size_logs_the_count_and_refuses_only_above_the_budget(caplog):
    budget = Models(("a", "b"), max_params=1_000)
    with caplog.at_level(logging.INFO, logger="eval.options"):
        budget.check_size(1_000, "a + b", " (2 members)")  # at the budget: accepted
        budget.check_size(999, "a + b")  # and below it
    assert "model: 1,000 parameters (2 members)" in caplog.text and "model: 999 parameters" in caplog.text
    with pytest.raises(TooManyParameters, match=r"^a \+ b: 1,001 parameters, above --max-params 1,000$"):
        budget.check_size(1_001, "a + b")
    Models(("a",)).check_size(10**9, "a")  # no budget: anything goes

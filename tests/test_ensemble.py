"""eval/ensemble.py: several checkpoints decoded as one model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval import leaderboard
from eval.decode import Decoding
from eval.ensemble import Ensemble, MembersDiffer, combined, load_models, parameter_count
from eval.options import COMBINE, Models
from eval.transcribe import Transcription, transcribe
from shards.vocab import NUM_CLASSES, PHONEMES
from tests.checkpoints import other_model
from tests.processes import greedy_dev_row, why_failed
from train.checkpoint import ModelCard


def _log_probs(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(*shape, NUM_CLASSES, generator=generator)).log_softmax(dim=-1)


@pytest.mark.parametrize("combine", COMBINE)
def test_a_model_combined_with_itself_is_exactly_itself(combine):
    single = _log_probs(4, 50, seed=1)
    assert torch.equal(combined([single, single, single], combine).argmax(-1), single.argmax(-1))
    if combine == "probs":
        assert torch.equal(combined([single, single], combine), single)  # bit for bit
    else:
        torch.testing.assert_close(combined([single, single], combine), single, rtol=0, atol=1e-6)


def test_the_two_ways_are_the_mixture_and_the_renormalised_product():
    a, b = _log_probs(2, 30, seed=2), _log_probs(2, 30, seed=3)
    mixture = ((a.double().exp() + b.double().exp()) / 2).log()
    torch.testing.assert_close(combined([a, b], "probs").double(), mixture, rtol=0, atol=1e-5)
    product = ((a.double() + b.double()) / 2).log_softmax(dim=-1)
    torch.testing.assert_close(combined([a, b], "log_probs").double(), product, rtol=0, atol=1e-5)
    for way in COMBINE:  # each frame a distribution again
        total = combined([a, b], way).double().exp().sum(-1)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
    assert not torch.allclose(combined([a, b], "probs"), combined([a, b], "log_probs"), atol=1e-3)


def test_an_ensemble_runs_each_member_once_and_combines_their_posteriors(trained, tmp_path):
    data, model, _ = trained
    other = other_model(model, tmp_path)
    ensemble, cards = load_models(Models((model, other), combine="log_probs"))
    alone, second = load_models(Models((model,)))[0], load_models(Models((other,)))[0]
    assert isinstance(ensemble, Ensemble) and len(cards) == 2
    assert parameter_count(ensemble) == 2 * parameter_count(alone)
    calls = []
    for member in ensemble.members:
        member.register_forward_hook(lambda *_: calls.append(1))
    features, lengths = torch.randn(3, 120, 13), torch.tensor([120, 77, 9])
    with torch.no_grad():
        log_probs, out_lengths = ensemble(features, lengths)
        expected = combined([alone(features, lengths)[0], second(features, lengths)[0]], "log_probs")
    assert len(calls) == 2  # each member once per batch
    assert torch.equal(log_probs, expected) and torch.equal(out_lengths, alone.output_lengths(lengths))


def _transcripts(capsys, models: Models, folder: Path, beam: int) -> list[dict]:
    request = Transcription(models, [str(folder)], decoding=Decoding(beam=beam), format="jsonl")
    assert transcribe(request) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("combine", COMBINE)
def test_the_same_checkpoint_twice_transcribes_exactly_as_the_single_model(trained, capsys, combine):
    data, model, _ = trained
    folder = Path(data).parent / "raw" / "test" / "mfcc"
    for beam in (1, 8):
        alone = _transcripts(capsys, Models((model,)), folder, beam)
        twice = _transcripts(capsys, Models((model, model), combine=combine), folder, beam)
        assert [(r["input"], r["string"], r["frames"]) for r in twice] == [
            (r["input"], r["string"], r["frames"]) for r in alone
        ]
        assert len(alone) == 9 and any(r["string"] for r in alone)


def test_evaluation_of_an_ensemble_names_its_members_and_counts_their_parameters(trained, tmp_path):
    data, model, _ = trained
    other = other_model(model, tmp_path)
    alone = greedy_dev_row(model, data)
    twice = greedy_dev_row(model, data, "--checkpoint", model)
    assert twice["distance"] == alone["distance"] and twice["combine"] == COMBINE[0]
    assert twice["parameters"] == 2 * alone["parameters"] and alone["combine"] == ""
    pair = greedy_dev_row(model, data, "--checkpoint", other, "--combine", "log_probs")
    assert pair["checkpoint"] == f"{model}{leaderboard.MEMBERS}{other}"
    assert pair["epoch"] == f"0{leaderboard.MEMBERS}0" and pair["combine"] == "log_probs"
    assert pair["run"] == f"tiny{leaderboard.MEMBERS}other" and pair["weights"] == "live + live"


def _refusal(*command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "eval", *command], capture_output=True, text=True)
    assert result.returncode == 2, why_failed(result.stderr)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"phonemes": [*PHONEMES[:1], "ZZ", *PHONEMES[2:]]}, "vocabulary"),
        ({"front_end": {"kind": "mfcc", "hop_s": 0.02}}, "front end"),
        (
            {"stats": {"frames": 1, "mean": [1.0] * 13, "std": [2.0] * 13, "m2": [0.0] * 13}},
            "normalisation statistics",
        ),
    ],
    ids=["vocabulary", "front end", "statistics"],
)
def test_members_that_differ_in_what_their_numbers_mean_are_refused_naming_it(
    trained, tmp_path, changes, named
):
    data, model, _ = trained
    other = other_model(model, tmp_path, **changes)
    with pytest.raises(MembersDiffer, match=f"{other}: cannot join an ensemble with {model}: its {named}"):
        load_models(Models((model, other)))
    line = _refusal("transcribe", "--checkpoint", model, "--checkpoint", other, data)
    assert named in line and other in line


def test_members_of_another_time_stride_are_refused(trained, tmp_path):
    data, model, _ = trained
    card = ModelCard.load(model)
    other = other_model(model, tmp_path, config={**card.config, "strides": [1, 4]})
    with pytest.raises(MembersDiffer, match=r"its time stride \(4 against 2\) differ"):
        load_models(Models((model, other)))


def test_an_ensemble_above_the_parameter_budget_is_refused_and_every_run_says_its_size(trained, tmp_path):
    data, model, _ = trained
    single = parameter_count(load_models(Models((model,)))[0])
    features = str(Path(data).parent / "raw" / "test" / "mfcc" / "te00000.npy")
    command = ["transcribe", "--checkpoint", model, "--checkpoint", model, features, "--beam", "1"]
    line = _refusal(*command, "--max-params", str(2 * single - 1))
    assert f"{2 * single:,} parameters, above --max-params {2 * single - 1:,}" in line
    allowed = subprocess.run(
        [sys.executable, "-m", "eval", *command, "--max-params", str(2 * single)],
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0, why_failed(allowed.stderr)
    assert f"model: {2 * single:,} parameters (an ensemble of 2, combining probs)" in allowed.stderr

"""train/average.py: weights averaged during training, on the device, resumed exactly, scored and saved."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.processes import REPO, greedy_dev_row, kill_when
from train import checkpoint
from train.average import WeightAverage
from train.report import read_metrics

TINY = ["channels=16", "lstm_layers=1", "lstm_hidden=16", "classifier_hidden=32", "max_frames=2000"]
TINY += ["num_workers=0", "warmup_steps=5", "scheduler=cosine", "epochs=2", "checkpoint_every_minutes=0"]


def _set(module: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(value)


@pytest.mark.parametrize("kind", ["ema", "cumulative"])
def test_the_average_follows_its_formula_every_nth_step_and_leaves_buffers_to_the_live_model(kind):
    live = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    _set(live, 0.0)
    average = WeightAverage(live, kind, decay=0.9, every=2)
    expected, updates = 0.0, 0
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], start=1):
        _set(live, value)
        average.update(live, step)
        if step % 2 == 0:  # every 2nd step moves the average
            updates += 1
            weight = 1 / updates if kind == "cumulative" else 1 - min(0.9, (1 + updates) / (10 + updates))
            expected += weight * (value - expected)
    assert average.updates == 3
    for parameter in average.model.parameters():
        assert torch.allclose(parameter, torch.full_like(parameter, expected))
    if kind == "cumulative":  # the plain mean of the weights at each update
        assert expected == pytest.approx((2.0 + 8.0 + 32.0) / 3)
    live[1].running_mean.fill_(5.0)
    assert torch.equal(average.with_statistics_of(live)[1].running_mean, live[1].running_mean)
    restored = WeightAverage(live, kind, decay=0.9, every=2)
    restored.load_state_dict(average.state_dict(), "state.pt")
    assert restored.updates == 3 and all(
        torch.equal(a, b)
        for a, b in zip(restored.model.parameters(), average.model.parameters(), strict=True)
    )


def test_a_checkpoint_without_an_average_cannot_continue_one():
    live = torch.nn.Linear(3, 2)
    with pytest.raises(checkpoint.CheckpointError, match="state.pt: holds no ema weight average"):
        WeightAverage(live, "ema", 0.9, 1).load_state_dict({}, "state.pt")


@pytest.fixture(scope="module")
def data(tiny_shards) -> str:
    return tiny_shards


def _train(data: str, out: Path, *overrides: str) -> list[str]:
    script = [str(REPO / "train" / "main.py"), "--data", data, "--out", str(out)]
    return [sys.executable, *script, *TINY, "average=ema", "average_every=2", *overrides]


def _latest(out: Path) -> dict:
    path = out / checkpoint.LATEST
    return json.loads(path.read_text()) if path.exists() else {}


def _evaluated_dev(data: str, model: Path, weights: str) -> float:
    row = greedy_dev_row(str(model), data, "--weights", weights)
    assert row["weights"] == weights
    return row["distance"]


def test_an_averaging_run_killed_mid_epoch_resumes_to_the_same_average_and_scores_both(data, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_train(data, whole), check=True, capture_output=True)
    out = tmp_path / "killed"
    command = _train(data, out, "checkpoint_every_steps=3")
    kill_when(command, lambda: _latest(out).get("epoch") == 0 and "step-" in _latest(out).get("folder", ""))
    subprocess.run(command, check=True, capture_output=True)  # --resume auto
    final = checkpoint.epoch_folder(1) + "/model.pt"
    expected, resumed = checkpoint.load(str(whole / final)), checkpoint.load(str(out / final))
    # Invariant: bit-identical live and averaged weights, as if never interrupted
    for weights in ("model", "averaged"):
        assert expected[weights].keys() == resumed[weights].keys()
        assert all(torch.equal(expected[weights][k], resumed[weights][k]) for k in expected[weights])
    assert any(not torch.equal(expected["model"][k], expected["averaged"][k]) for k in expected["model"])
    # metrics.csv says which weights each dev score is of; model.pt's card carries both
    last = read_metrics(str(whole))[-1]
    assert expected["dev_distance"] == float(last["dev_distance"])
    assert expected["averaged_dev_distance"] == float(last["dev_distance_averaged"])
    # evaluation scores what training scored, for either weights (auto: the averaged ones)
    assert _evaluated_dev(data, whole / final, "live") == float(last["dev_distance"])
    assert _evaluated_dev(data, whole / final, "averaged") == float(last["dev_distance_averaged"])

"""eval/average_checkpoints.py: `python -m eval average` of a run's epoch checkpoints."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from tests.processes import REPO, greedy_dev_row, why_failed
from train import checkpoint

TINY = ["channels=16", "lstm_layers=1", "lstm_hidden=16", "classifier_hidden=32", "max_frames=2000"]
TINY += ["num_workers=0", "checkpoint_every_minutes=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[str, Path]:
    """Three epoch checkpoints, all kept."""
    root = tmp_path_factory.mktemp("average")
    raw = write_hw3p2(root / "raw", counts=(30, 6, 4), frames=(60, 200), seed=5)
    build(Settings(str(raw), str(root / "shards"), shard_mb=0.2))
    out = root / "run"
    command = [
        sys.executable,
        str(REPO / "train" / "main.py"),
        "--data",
        str(root / "shards"),
        "--out",
        str(out),
    ]
    subprocess.run([*command, *TINY, "epochs=3", "keep_last=3"], check=True, capture_output=True)
    return str(root / "shards"), out


def _average(out: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "eval", "average", "--run", str(out), *arguments]
    return subprocess.run(command, capture_output=True, text=True)


def _model(path: Path) -> dict:
    return checkpoint.load(str(path))


def test_the_last_two_epochs_average_to_their_mean_and_the_card_names_them(run, tmp_path):
    data, out = run
    result = _average(out, "--last", "2", "--out", str(tmp_path / "avg" / "model.pt"))
    assert result.returncode == 0, why_failed(result.stderr)
    assert json.loads(result.stdout)["epochs"] == [1, 2]
    averaged = _model(tmp_path / "avg" / "model.pt")
    one, two = (_model(out / checkpoint.epoch_folder(e) / "model.pt") for e in (1, 2))
    assert averaged["sources"] == [str(out / checkpoint.epoch_folder(e) / "model.pt") for e in (1, 2)]
    assert averaged["dev_distance"] is None and averaged["epoch"] == 2
    for name, tensor in averaged["model"].items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (one["model"][name] + two["model"][name]) / 2, atol=1e-7)
        else:  # BatchNorm's batch count: the newest one's
            assert torch.equal(tensor, two["model"][name])
    # used as any checkpoint is
    assert greedy_dev_row(str(tmp_path / "avg" / "model.pt"), data)["epoch"] == 2


def test_one_checkpoint_averaged_is_itself_and_best_picks_the_lowest_dev_distance(run, tmp_path):
    _, out = run
    cards = {e: _model(out / checkpoint.epoch_folder(e) / "model.pt") for e in range(3)}
    best = min(cards, key=lambda e: (cards[e]["dev_distance"], -e))
    for arguments, epoch in ((["--epochs", "1-1"], 1), (["--best", "1"], best)):
        target = tmp_path / f"{arguments[0][2:]}.pt"
        result = _average(out, *arguments, "--out", str(target))
        assert result.returncode == 0, why_failed(result.stderr)
        averaged, source = _model(target)["model"], cards[epoch]["model"]
        assert all(torch.equal(averaged[k], source[k]) for k in source)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--last", "5"], "--last 5 asks for more epoch checkpoints than the run keeps ([0, 1, 2])"),
        (["--epochs", "1-7"], "no checkpoint for epoch(s) [3, 4, 5, 6, 7]"),
        (["--epochs", "2-1"], "--epochs '2-1': expected A-B with A <= B"),
        (["--last", "2", "--weights", "averaged"], "has no averaged weights"),
    ],
)
def test_what_cannot_be_averaged_is_one_line(run, tmp_path, arguments, message):
    _, out = run
    result = _average(out, *arguments, "--out", str(tmp_path / "model.pt"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "model.pt").exists()


def test_checkpoints_of_another_model_are_refused_naming_the_difference(run, tmp_path):
    data, out = run
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    other = tmp_path / "other"
    command = [sys.executable, str(REPO / "train" / "main.py"), "--data", data, "--out", str(other)]
    subprocess.run([*command, *TINY, "epochs=1", "channels=8"], check=True, capture_output=True)
    shutil.copy(
        other / checkpoint.epoch_folder(0) / "model.pt", mixed / checkpoint.epoch_folder(2) / "model.pt"
    )
    result = _average(mixed, "--last", "3", "--out", str(tmp_path / "model.pt"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{mixed / checkpoint.epoch_folder(2) / 'model.pt'}: not the same model as" in result.stderr
    assert "weight names or shapes differ" in result.stderr

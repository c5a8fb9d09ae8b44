"""Checkpoint writing off the training thread: snapshots, one in flight, retries, and a safe latest.json."""

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.store import Store
from tests.checkpoints import training_state
from train import checkpoint


class FlakyStore(Store):
    """A real local store whose first ``failures`` publishes fail."""

    def __init__(self, url: str, failures: int):
        super().__init__(url)
        self.failures = failures

    def publish(self, staged: Path, relative: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            staged.unlink()
            raise ConnectionResetError(f"{relative}: connection reset by peer")
        super().publish(staged, relative)


def _card(step: int, weight: torch.Tensor) -> checkpoint.ModelCard:
    return checkpoint.ModelCard({"w": weight}, {}, 13, {}, epoch=0, step=step, dev_distance=None)


class GatedStore(Store):
    """A real local store whose publishes wait until the test opens the gate."""

    def __init__(self, url: str):
        super().__init__(url)
        self.gate, self.threads, self.published = threading.Event(), set(), []

    def publish(self, staged: Path, relative: str) -> None:
        self.threads.add(threading.current_thread().name)
        if not self.gate.wait(timeout=10):  # not an OSError: never retried
            raise RuntimeError(f"{relative}: the caller waited for the upload")
        super().publish(staged, relative)
        self.published.append(relative)


def test_a_slow_upload_does_not_stall_the_caller_and_saves_a_snapshot(tmp_path, caplog):
    store = GatedStore(str(tmp_path))
    writer = checkpoint.CheckpointWriter(store, deadline_s=30)
    weight = torch.zeros(3)
    writer.submit(
        checkpoint.step_folder(1), training_state(1, {"w": weight}), _card(1, weight), keep_last=1, best=None
    )
    # Invariant: the call returns while the upload cannot even start (the gate is shut)
    assert not (tmp_path / checkpoint.LATEST).exists()
    weight += 1  # training goes on changing the live tensors
    time.sleep(1.5)  # the upload waits at least this long: the log line must say so
    with caplog.at_level("INFO", logger="train.checkpoint"):
        store.gate.set()
        writer.wait()
    (seconds,) = [float(r.getMessage().split(" written in ")[1].removesuffix(" s")) for r in caplog.records]
    assert 1.5 <= seconds < 60, caplog.records
    saved = checkpoint.load(checkpoint.latest(str(tmp_path), "model.pt"))
    assert torch.equal(saved["model"]["w"], torch.zeros(3)) and saved["step"] == 1
    assert threading.current_thread().name not in store.threads


def test_one_checkpoint_in_flight_and_latest_names_the_newest(tmp_path):
    """Deterministic, not a race: the first upload is held at a shut gate, so a second submit that
    did not wait for it would return (and start uploading) while the gate is still shut."""
    store = GatedStore(str(tmp_path))
    writer = checkpoint.CheckpointWriter(store, deadline_s=30)

    def submit(step: int) -> None:
        state, card = training_state(step, {"w": torch.ones(1)}), _card(step, torch.ones(1))
        writer.submit(checkpoint.step_folder(step), state, card, 1, None)

    submit(1)
    second = threading.Thread(target=submit, args=(2,))
    second.start()
    second.join(timeout=2)
    # Invariant: the second submit waits for the first upload, which cannot finish while the gate is shut
    assert second.is_alive(), "submit returned while the previous checkpoint was still being written"
    assert not any("step-00000002" in folder for folder in store.published)
    store.gate.set()
    second.join()
    submit(3)
    writer.wait()
    steps = [folder.split("/")[1] for folder in store.published if folder.startswith("checkpoints/step-")]
    assert steps == sorted(steps)  # each checkpoint whole before the next begins
    assert checkpoint.latest(str(tmp_path), "state.pt").endswith("step-00000003/state.pt")
    assert [p.name for p in (tmp_path / "checkpoints").glob("step-*")] == ["step-00000003"]


def test_a_failing_store_is_retried_then_reported_and_latest_stays_complete(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("shards.retry.FIRST_DELAY_S", 0.05)
    store = FlakyStore(str(tmp_path), failures=2)
    writer = checkpoint.CheckpointWriter(store, deadline_s=30)
    writer.submit(
        checkpoint.epoch_folder(0), training_state(5, {"w": torch.ones(1)}), _card(5, torch.ones(1)), 1, None
    )
    writer.wait()  # two failed publishes, retried
    assert caplog.text.count("connection reset by peer; retrying") == 2
    store.failures = 10**9  # the store goes away for good
    writer.deadline_s = 0.5
    writer.submit(
        checkpoint.epoch_folder(1), training_state(9, {"w": torch.ones(1)}), _card(9, torch.ones(1)), 1, None
    )
    with pytest.raises(
        checkpoint.CheckpointError, match=rf"{tmp_path}/checkpoints/epoch-0001: still failing after"
    ):
        writer.wait()
    # Invariant: latest.json still names the last complete checkpoint, which loads
    assert checkpoint.load(checkpoint.latest(str(tmp_path), "state.pt"))["step"] == 5


def test_keep_last_keeps_the_newest_epochs_the_best_and_the_latest(tmp_path):
    store = Store(str(tmp_path))

    def kept_after(epochs: int, keep_last: int, best: int) -> list[str]:
        for epoch in range(epochs):
            card = checkpoint.ModelCard({}, {}, 13, {}, epoch=epoch, step=epoch, dev_distance=None)
            folder = checkpoint.epoch_folder(epoch)
            checkpoint.save(
                store, folder, training_state(epoch), card, keep_last, checkpoint.epoch_folder(best)
            )
        names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*-*"))
        store.remove("checkpoints")
        return names

    assert kept_after(5, 2, best=1) == ["epoch-0001", "epoch-0003", "epoch-0004"]
    assert kept_after(3, 5, best=2) == ["epoch-0000", "epoch-0001", "epoch-0002"]  # fewer than keep_last
    assert kept_after(4, 1, best=3) == ["epoch-0003"]


def test_a_resume_names_a_setting_that_only_one_side_has():
    """A setting this version dropped, or one the checkpoint predates, is named like a changed one."""
    assert checkpoint.differences({"lr": 0.002, "gone": 1}, {"lr": 0.002}) == ["gone: 1 → None"]
    assert checkpoint.differences({"lr": 0.002}, {"lr": 0.002, "new": 2}) == ["new: None → 2"]


def test_random_states_come_back_exactly_and_a_cuda_state_only_to_its_own_device(monkeypatch):
    cpu = torch.device("cpu")
    saved = checkpoint.rng_state(cpu)
    assert saved["cuda"] is None
    drawn = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    checkpoint.seed_everything(0, 99)  # anything else in between
    checkpoint.set_rng_state(saved, cpu)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(drawn[0], again[0]) and np.array_equal(drawn[1], again[1]) and drawn[2] == again[2]

    # which CUDA state goes where, recorded instead of set (this machine has no GPU)
    restored: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: f"state of {device}")
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device: restored.append((state, str(device)))
    )
    assert checkpoint.rng_state(torch.device("cuda", 1))["cuda"] == "state of cuda:1"
    for device, cuda, expected in [
        ("cuda:1", "mine", [("mine", "cuda:1")]),
        ("cpu", "a GPU run's", []),  # a CPU run resumed from a GPU checkpoint
        ("cuda:1", ["gpu 0", "gpu 1"], [("gpu 1", "cuda:1")]),  # earlier versions: every GPU the rank saw
        ("cuda", ["gpu 0"], [("gpu 0", "cuda")]),
        ("cuda:2", ["gpu 0", "gpu 1"], []),  # that machine saw fewer GPUs: keep the seeded state
        ("cuda:3", ["gpu 0", "gpu 1"], []),
        ("cuda", ["gpu 0", "gpu 1"], [("gpu 0", "cuda")]),  # no index: the first
        ("cuda", [], []),
        ("cpu", ["gpu 0"], []),
        ("cuda:0", None, []),  # a GPU run resumed from a CPU checkpoint
    ]:
        restored.clear()
        checkpoint.set_rng_state(saved | {"cuda": cuda}, torch.device(device))
        assert restored == expected, (device, cuda)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_runs_code_and_a_foreign_dict_is_named(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="missing.pt: checkpoint not found"):
        checkpoint.load(str(tmp_path / "missing.pt"))
    marker = tmp_path / "code-ran"
    torch.save({"model": _RunsCode(marker)}, tmp_path / "model.pt")
    with pytest.raises(checkpoint.CheckpointError, match="model.pt: not a readable checkpoint"):
        checkpoint.load(str(tmp_path / "model.pt"))
    assert not marker.exists()
    torch.save({"weights": {}}, tmp_path / "other.pt")  # readable, but not this project's
    with pytest.raises(checkpoint.CheckpointError, match="other.pt: not a ModelCard of this project"):
        checkpoint.ModelCard.load(str(tmp_path / "other.pt"))


def test_a_model_card_is_published_where_its_url_says(tmp_path, monkeypatch):
    """eval average writes its model.pt to a URL of the user's: in that folder, or here for a bare name."""
    card = _card(7, torch.arange(3.0))
    card.publish(f"{tmp_path}/averaged/model.pt")
    assert checkpoint.load(str(tmp_path / "averaged" / "model.pt"))["step"] == 7
    monkeypatch.chdir(tmp_path / "averaged")
    _card(8, torch.ones(2)).publish("bare.pt")
    assert checkpoint.load(str(tmp_path / "averaged" / "bare.pt"))["step"] == 8
    assert sorted(p.name for p in (tmp_path / "averaged").iterdir() if p.suffix == ".pt") == [
        "bare.pt",
        "model.pt",
    ]

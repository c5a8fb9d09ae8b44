"""Checkpoint writing off the training thread: snapshots, one in flight, retries, and a safe latest.json."""

import threading
import time
from pathlib import Path

import pytest
import torch

from shards.store import Store
from tests.conftest import training_state
from train import checkpoint


class SlowStore(Store):
    """A real local store whose every publish takes ``delay`` seconds and first ``failures`` publishes fail."""

    def __init__(self, url: str, delay: float = 0.0, failures: int = 0):
        super().__init__(url)
        self.delay, self.failures, self.threads = delay, failures, set()

    def publish(self, staged: Path, relative: str) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
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
        self.gate, self.threads = threading.Event(), set()

    def publish(self, staged: Path, relative: str) -> None:
        self.threads.add(threading.current_thread().name)
        if not self.gate.wait(timeout=10):  # not an OSError: never retried
            raise RuntimeError(f"{relative}: the caller waited for the upload")
        super().publish(staged, relative)


def test_a_slow_upload_does_not_stall_the_caller_and_saves_a_snapshot(tmp_path):
    store = GatedStore(str(tmp_path))
    writer = checkpoint.CheckpointWriter(store, deadline_s=30)
    weight = torch.zeros(3)
    writer.submit(
        checkpoint.step_folder(1), training_state(1, {"w": weight}), _card(1, weight), keep_last=1, best=None
    )
    # Invariant: the call returns while the upload cannot even start (the gate is shut)
    assert not (tmp_path / checkpoint.LATEST).exists()
    weight += 1  # training goes on changing the live tensors
    store.gate.set()
    writer.wait()
    saved = checkpoint.load(checkpoint.latest(str(tmp_path), "model.pt"))
    assert torch.equal(saved["model"]["w"], torch.zeros(3)) and saved["step"] == 1
    assert threading.current_thread().name not in store.threads


def test_one_checkpoint_in_flight_and_latest_names_the_newest(tmp_path):
    store = SlowStore(str(tmp_path), delay=0.2)
    writer = checkpoint.CheckpointWriter(store, deadline_s=30)
    for step in (1, 2, 3):
        writer.submit(
            checkpoint.step_folder(step),
            training_state(step, {"w": torch.ones(1)}),
            _card(step, torch.ones(1)),
            1,
            None,
        )
    writer.wait()
    assert checkpoint.latest(str(tmp_path), "state.pt").endswith("step-00000003/state.pt")
    assert [p.name for p in (tmp_path / "checkpoints").glob("step-*")] == ["step-00000003"]


def test_a_failing_store_is_retried_then_reported_and_latest_stays_complete(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("shards.retry.FIRST_DELAY_S", 0.05)
    store = SlowStore(str(tmp_path), failures=2)
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

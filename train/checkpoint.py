"""Checkpoints under the run's output URL: what they hold, how they are written and read.

    OUT/checkpoints/epoch-NNNN/      after each epoch
    OUT/checkpoints/step-NNNNNNNN/   mid-epoch (every checkpoint_every_steps / _minutes, or on SIGTERM)
        state.pt    everything an exact continuation needs: model, optimiser, scheduler, step, reader
                    positions, the epoch's running totals and every random state of every rank,
                    history, best, the config and the dataset's fingerprints
        model.pt    weights only, with the config, the vocabulary and the normalisation statistics:
                    all evaluation needs (and the averaged weights, when the run averages them)
    OUT/checkpoints/latest.json      the newest complete checkpoint (written after its files)

The last ``keep_last`` epoch folders, the best one (lowest dev distance) and the newest checkpoint
are kept; a step folder goes once a newer checkpoint exists. :class:`CheckpointWriter` writes off
the training thread. Loading never unpickles code: ``torch.load(..., weights_only=True)``.
"""

import io
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import TypeVar

import fsspec
import numpy as np
import torch

from shards.errors import UserError
from shards.retry import with_retries
from shards.store import Store
from shards.vocab import PHONEME_MAP, PHONEMES
from train.config import upgraded

log = logging.getLogger("train.checkpoint")

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.json"
# what may change between a run and its continuation: none of these alters the trajectory
# (num_workers: the rest of the epoch is re-planned; report_to, log_every_steps: monitoring only)
RESUMABLE_CHANGES = {
    "keep_last",
    "checkpoint_every_steps",
    "checkpoint_every_minutes",
    "io_deadline_s",
    "num_workers",
    "report_to",
    "log_every_steps",
    "device",  # resuming elsewhere (a GPU run on a CPU machine) is allowed
}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit; the message names it."""


def epoch_folder(epoch: int) -> str:
    return f"{CHECKPOINTS}/epoch-{epoch:04d}"


def step_folder(step: int) -> str:
    return f"{CHECKPOINTS}/step-{step:08d}"


_File = TypeVar("_File", bound="_CheckpointFile")  # typing.Self needs Python 3.11


class _CheckpointFile:
    """A checkpoint file as a typed dataclass, stored as a plain dict of its fields."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # asdict would deep-copy every tensor

    @classmethod
    def load(cls: type[_File], url: str) -> _File:
        document = load(url)
        try:
            return cls(**document)
        except TypeError as error:
            raise CheckpointError(f"{url}: not a {cls.__name__} of this project ({error})") from error


@dataclass(frozen=True)
class ModelCard(_CheckpointFile):
    """What ``model.pt`` holds: all evaluation needs to rebuild the model and check its input.

    Training writes it, evaluation reads it, through :meth:`to_dict` / :meth:`load` only. The file
    is a plain dict (weights under ``model``), so ``torch.load(weights_only=True)`` reads it.
    """

    model: dict[str, torch.Tensor]  # the state_dict
    config: dict  # TrainConfig as a dict
    feature_dim: int
    stats: dict  # the dataset's stats.json: the normalisation the model was trained under
    epoch: int  # the last finished epoch (-1: none yet)
    step: int
    dev_distance: float | None
    phonemes: list[str] = field(default_factory=lambda: list(PHONEMES))
    phoneme_map: str = PHONEME_MAP
    front_end: dict | None = None  # the dataset's frontend.json (shards/frontend.py); None: unknown
    averaged: dict[str, torch.Tensor] | None = None  # train/average.py's weights (a state_dict); None: none
    averaged_dev_distance: float | None = None
    sources: list[str] = field(
        default_factory=list
    )  # the model.pt files averaged into this one (eval average)

    def publish(self, url: str) -> None:
        """Write this card as the ``model.pt`` at ``url``, atomically."""
        folder, _, name = url.rstrip("/").rpartition("/")
        _publish_torch(Store(folder or "."), self.to_dict(), name)


@dataclass(frozen=True)
class TrainingState(_CheckpointFile):
    """What ``state.pt`` holds: everything an exact continuation needs (``model.pt`` besides it).

    Training writes and reads it through :meth:`to_dict` / :meth:`load` only; a plain dict on disk,
    so ``torch.load(weights_only=True)`` reads it.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    train_stream: dict  # BatchStream.state_dict(): epoch, batches taken, layout, earlier layouts
    dev_stream: dict
    history: list[dict]  # a row per finished epoch (metrics.csv)
    step: int
    elapsed_s: float
    best: list | None  # [dev distance, epoch]
    progress: list[dict]  # each rank's running totals of the epoch in progress
    rng: list[dict]  # each rank's random states (rng_state())
    world_size: int
    config: dict  # TrainConfig as a dict
    fingerprints: dict  # split → index.json fingerprint
    scaler: dict = field(default_factory=dict)  # GradScaler.state_dict() (fp16; empty before it existed)
    average: dict = field(default_factory=dict)  # WeightAverage.state_dict() (empty: none)


def _publish_torch(store: Store, obj: dict, relative: str) -> None:
    staged = store.staging_file(relative.rsplit("/", 1)[-1])
    torch.save(obj, staged)
    store.publish(staged, relative)


def save(
    store: Store, folder: str, state: TrainingState, card: ModelCard, keep_last: int, best: str | None
) -> None:
    """Publish ``folder``'s files, then point latest.json at it, then drop what is no longer kept."""
    _publish_torch(store, state.to_dict(), f"{folder}/state.pt")
    _publish_torch(store, card.to_dict(), f"{folder}/model.pt")
    pointer = {"folder": folder, "epoch": card.epoch, "step": card.step}
    store.publish_bytes(json.dumps(pointer).encode(), LATEST)
    names = store.list(CHECKPOINTS)
    epochs = sorted(n for n in names if n.startswith("epoch-"))
    keep = {folder, best, *(f"{CHECKPOINTS}/{n}" for n in epochs[max(len(epochs) - keep_last, 0) :])}
    for name in names:
        if name.startswith(("epoch-", "step-")) and f"{CHECKPOINTS}/{name}" not in keep:
            store.remove(f"{CHECKPOINTS}/{name}")


def _snapshot(obj, copies: dict[int, torch.Tensor]):
    """A copy training can no longer change: tensors cloned to the CPU, containers rebuilt. A tensor
    met twice (the weights are in state.pt and in model.pt) is copied once, through ``copies``."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in copies:
            copies[id(obj)] = obj.detach().to("cpu", copy=True)
        return copies[id(obj)]
    if isinstance(obj, dict):
        return {key: _snapshot(value, copies) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_snapshot(value, copies) for value in obj)
    return obj  # numbers, strings, None: immutable


class CheckpointWriter:
    """Writes checkpoints on a background thread, so that an upload does not stall training.

    The state is copied to host memory before the call returns; at most one checkpoint is in
    flight (the next one waits for it); a failed write is retried with backoff for up to
    ``deadline_s`` and then reported by the next :meth:`wait`. latest.json is published after the
    checkpoint's files, so it never names an incomplete one, whatever fails.
    """

    def __init__(self, store: Store, deadline_s: float):
        self.store, self.deadline_s = store, deadline_s
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(
        self, folder: str, state: TrainingState, card: ModelCard, keep_last: int, best: str | None
    ) -> None:
        self.wait()
        copies: dict[int, torch.Tensor] = {}
        card = ModelCard(**_snapshot(card.to_dict(), copies))
        state = TrainingState(**_snapshot(state.to_dict(), copies))
        args = (folder, state, card, keep_last, best)
        self._thread = threading.Thread(target=self._write, args=args, name=f"checkpoint {folder}")
        self._thread.start()

    def _write(self, folder: str, *rest) -> None:
        started = time.monotonic()
        try:
            with_retries(
                lambda: save(self.store, folder, *rest), f"{self.store.url}/{folder}", self.deadline_s
            )
            log.info("checkpoint %s/%s written in %.1f s", self.store.url, folder, time.monotonic() - started)
        except Exception as error:
            self._error = error

    def wait(self) -> None:
        """Until the checkpoint in flight is written; raises CheckpointError if it could not be."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(
                f"checkpoint not written, the newest complete one is kept: {error}"
            ) from error


def load(url: str) -> dict:
    """A checkpoint file (state.pt or model.pt) at any fsspec URL."""
    try:
        with fsspec.open(url, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as error:
        raise CheckpointError(f"{url}: checkpoint not found") from error
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a damaged or foreign file
        raise CheckpointError(
            f"{url}: not a readable checkpoint ({type(error).__name__}: {error})"
        ) from error


def has_checkpoint(out: str) -> bool:
    return Store(out).exists(LATEST)


def latest(out: str, name: str) -> str:
    """URL of file ``name`` (state.pt or model.pt) in the run's newest complete checkpoint."""
    store = Store(out)
    if not store.exists(LATEST):
        raise CheckpointError(f"{store.path(LATEST)}: no checkpoint in this run folder")
    pointer = json.loads(store.read_bytes(LATEST))
    return f"{out.rstrip('/')}/{pointer['folder']}/{name}"


def differences(saved: dict, current: dict) -> list[str]:
    """``key: saved → current`` for every setting that differs and would change the trajectory."""
    saved = upgraded(saved)
    keys = sorted((saved.keys() | current.keys()) - RESUMABLE_CHANGES)
    return [f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def rng_state(device: torch.device) -> dict:
    """Every random state this process has: torch CPU, its own CUDA device's (only that one: another
    machine may see fewer GPUs), numpy's and Python's global ones."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "python": random.getstate(),
    }


def seed_everything(seed: int, step: int) -> None:
    """Every random state of this process from (seed, step): where a resume cannot restore the saved
    states (another world size), the continuation is still a function of the checkpoint alone."""
    numbers = np.random.SeedSequence([seed, step]).generate_state(3)
    torch.manual_seed(int(numbers[0]))  # all CUDA devices too
    np.random.seed(int(numbers[1]))
    random.seed(int(numbers[2]))


def set_rng_state(state: dict, device: torch.device) -> None:
    """``rng_state``'s states back. A CUDA state goes to this rank's own device, and only there:
    none is restored on a CPU run, and a GPU run resumed from a CPU checkpoint keeps its seeded one.
    (Files of earlier versions hold a list of every GPU the saving rank saw: its own is at its index.)"""
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if isinstance(cuda, list):
        cuda = cuda[device.index or 0] if device.type == "cuda" and len(cuda) > (device.index or 0) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))

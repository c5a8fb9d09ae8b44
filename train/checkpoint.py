"""Checkpoints under the run's output URL: what they hold, how they are written and read.

    OUT/checkpoints/epoch-NNNN/      after each epoch
    OUT/checkpoints/step-NNNNNNNN/   mid-epoch (every checkpoint_every_steps / _minutes, or on SIGTERM)
        state.pt    everything an exact continuation needs: model, optimiser, scheduler, step, reader
                    positions, the epoch's running totals and every random state of every rank,
                    history, best, the config and the dataset's fingerprints
        model.pt    weights only, with the config, the vocabulary and the normalisation statistics:
                    all evaluation needs
    OUT/checkpoints/latest.json      the newest complete checkpoint (written after its files)

The last ``keep_last`` epoch folders, the best one (lowest dev distance) and the newest checkpoint
are kept; a step folder goes once a newer checkpoint exists. Loading never unpickles code:
``torch.load(..., weights_only=True)``.
"""

import io
import json
import random

import fsspec
import numpy as np
import torch

from shards.store import Store

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.json"
# what may change between a run and its continuation: none of these alters the trajectory
RESUMABLE_CHANGES = {"keep_last", "checkpoint_every_steps", "checkpoint_every_minutes"}


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit; the message names it."""


def epoch_folder(epoch: int) -> str:
    return f"{CHECKPOINTS}/epoch-{epoch:04d}"


def step_folder(step: int) -> str:
    return f"{CHECKPOINTS}/step-{step:08d}"


def _publish_torch(store: Store, obj: dict, relative: str) -> None:
    staged = store.staging_file(relative.rsplit("/", 1)[-1])
    torch.save(obj, staged)
    store.publish(staged, relative)


def save(store: Store, folder: str, state: dict, model_card: dict, keep_last: int, best: str | None) -> None:
    """Publish ``folder``'s files, then point latest.json at it, then drop what is no longer kept."""
    _publish_torch(store, state, f"{folder}/state.pt")
    _publish_torch(store, model_card, f"{folder}/model.pt")
    pointer = {"folder": folder, "epoch": model_card["epoch"], "step": model_card["step"]}
    store.publish_bytes(json.dumps(pointer).encode(), LATEST)
    names = store.list(CHECKPOINTS)
    epochs = sorted(n for n in names if n.startswith("epoch-"))
    keep = {folder, best, *(f"{CHECKPOINTS}/{n}" for n in epochs[max(len(epochs) - keep_last, 0) :])}
    for name in names:
        if name.startswith(("epoch-", "step-")) and f"{CHECKPOINTS}/{name}" not in keep:
            store.remove(f"{CHECKPOINTS}/{name}")


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
    keys = sorted((saved.keys() | current.keys()) - RESUMABLE_CHANGES)
    return [f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def rng_state() -> dict:
    """Every random state this process has: torch CPU, each CUDA device, numpy's and Python's global ones."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
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

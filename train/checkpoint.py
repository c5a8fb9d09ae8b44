"""Checkpoints under the run's output URL, each file published atomically.

    OUT/checkpoints/epoch-NNNN/state.pt   everything --resume needs: model, optimiser, scheduler,
                                          reader position, every rank's RNG state, history
    OUT/checkpoints/epoch-NNNN/model.pt   weights only, with the config, the vocabulary and the
                                          normalisation statistics: all evaluation needs
    OUT/checkpoints/latest.json           the newest complete checkpoint (written after its files)

The last ``keep_last`` epochs and the best one (lowest dev distance) are kept. Loading never
unpickles code: ``torch.load(..., weights_only=True)``.
"""

import io
import json

import torch

from shards.store import Store

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit; the message names it."""


def epoch_folder(epoch: int) -> str:
    return f"{CHECKPOINTS}/epoch-{epoch:04d}"


def _publish_torch(store: Store, obj: dict, relative: str) -> None:
    staged = store.staging_file(relative.rsplit("/", 1)[-1])
    torch.save(obj, staged)
    store.publish(staged, relative)


def save(
    store: Store, epoch: int, state: dict, model_card: dict, keep_last: int, best_epoch: int | None
) -> None:
    folder = epoch_folder(epoch)
    _publish_torch(store, state, f"{folder}/state.pt")
    _publish_torch(store, model_card, f"{folder}/model.pt")
    store.publish_bytes(json.dumps({"epoch": epoch, "folder": folder}).encode(), LATEST)
    # the folder latest.json names is always kept, whatever keep_last says
    keep = {folder} | {epoch_folder(e) for e in range(epoch - keep_last + 1, epoch + 1)}
    if best_epoch is not None:
        keep.add(epoch_folder(best_epoch))
    for name in store.list(CHECKPOINTS):
        if name.startswith("epoch-") and f"{CHECKPOINTS}/{name}" not in keep:
            store.remove(f"{CHECKPOINTS}/{name}")


def load(url: str) -> dict:
    """A checkpoint file (state.pt or model.pt) at any fsspec URL."""
    import fsspec

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


def latest(out: str, name: str) -> str:
    """URL of file ``name`` (state.pt or model.pt) in the run's newest complete checkpoint."""
    store = Store(out)
    if not store.exists(LATEST):
        raise CheckpointError(f"{store.path(LATEST)}: no checkpoint in this run folder")
    pointer = json.loads(store.read_bytes(LATEST))
    return f"{out.rstrip('/')}/{pointer['folder']}/{name}"

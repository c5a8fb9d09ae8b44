"""Rebuild a trained model from its weights-only ``model.pt`` (written by training)."""

import numpy as np
import torch

from shards.errors import UserError
from train.checkpoint import CheckpointError, ModelCard, latest
from train.config import TrainConfig, upgraded
from train.hardware import allow_tf32
from train.model import CTCModel


def model_url(checkpoint: str) -> str:
    """A ``model.pt`` URL as given, or a run folder's latest one."""
    return checkpoint if checkpoint.endswith(".pt") else latest(checkpoint, "model.pt")


def run_folder(checkpoint: str) -> str:
    """``<runs>/<run>/checkpoints/epoch-0003/model.pt`` → ``<runs>/<run>`` (model_url's inverse)."""
    return checkpoint.rstrip("/").rsplit("/checkpoints/", 1)[0]


def run_name(checkpoint: str) -> str:
    """The leaderboard's name for a checkpoint's run: its run folder's name; for a model.pt outside a
    run (eval average's --out), its folder's name, or the file's own stem when that is not ``model``."""
    if "/checkpoints/" in checkpoint:
        return run_folder(checkpoint).rsplit("/", 1)[-1]
    folder, _, name = checkpoint.rstrip("/").rpartition("/")
    stem = name.removesuffix(".pt")
    return folder.rsplit("/", 1)[-1] if stem == "model" and folder else stem


def chosen_weights(card: ModelCard, weights: str, url: str) -> tuple[str, dict]:
    """The name and state_dict of the weights asked for: ``auto`` takes the averaged ones where the
    run averaged (train/average.py), else the live ones."""
    if weights == "averaged" and card.averaged is None:
        raise CheckpointError(f"{url}: has no averaged weights (its run trained with average=none)")
    if weights == "averaged" or (weights == "auto" and card.averaged is not None):
        return "averaged", card.averaged
    return "live", card.model


def chosen_dev_distance(card: ModelCard, weights: str, url: str) -> float | None:
    """Training's dev distance of the weights :func:`chosen_weights` takes."""
    averaged = chosen_weights(card, weights, url)[0] == "averaged"
    return card.averaged_dev_distance if averaged else card.dev_distance


def load_model(url: str, weights: str = "auto") -> tuple[CTCModel, ModelCard]:
    """The model in eval mode with the ``weights`` asked for (:func:`chosen_weights`), and the
    checkpoint's card (config, vocabulary, stats, epoch, step)."""
    card = ModelCard.load(url)
    _, state = chosen_weights(card, weights, url)
    try:
        # the LSTM path is this device's (auto: packed on GPUs, padded on CPUs): the same function
        config = TrainConfig(**upgraded(card.config) | {"lstm_impl": "auto"}).check()
        model = CTCModel(card.feature_dim, config)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{url}: not a model checkpoint of this project ({type(error).__name__}: {error})"
        ) from error
    return model.eval(), card


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on ``device``, its float32 matmuls under training's rule (hardware.allow_tf32: TF32
    from compute capability 8.0), so that evaluation scores what training's validation scored."""
    allow_tf32(device)
    return model.to(device)


def same_statistics(stats: dict, other: dict) -> bool:
    """Whether two stats.json normalise alike (mean and std equal to 1e-12)."""
    return all(np.allclose(stats[k], other[k], rtol=0, atol=1e-12) for k in ("mean", "std"))


def interface_differences(card: ModelCard, other: ModelCard) -> list[str]:
    """What two checkpoints' outputs or inputs do not share: vocabulary, feature dimension, front
    end, normalisation statistics (their names; empty when they agree)."""
    return [
        what
        for what, differs in (
            ("vocabulary", (card.phonemes, card.phoneme_map) != (other.phonemes, other.phoneme_map)),
            ("feature dimension", card.feature_dim != other.feature_dim),
            ("front end", card.front_end != other.front_end),
            ("normalisation statistics (dataset)", not same_statistics(card.stats, other.stats)),
        )
        if differs
    ]


def check_normalisation(card: ModelCard, dataset_stats: dict, checkpoint_url: str, data_url: str) -> None:
    """The data must be normalised exactly as the model's training data was."""
    if not same_statistics(card.stats, dataset_stats):
        raise UserError(
            f"{data_url}: normalised with other statistics than {checkpoint_url} was trained on; "
            "re-shard it with `python -m pipeline ... --stats <the training data's stats.json>`"
        )

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


WEIGHTS = ("auto", "live", "averaged")  # which of a model.pt's weights: auto = averaged where it has them


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


def place(model: CTCModel, device: torch.device) -> CTCModel:
    """The model on ``device``, its float32 matmuls under training's rule (hardware.allow_tf32: TF32
    from compute capability 8.0), so that evaluation scores what training's validation scored."""
    allow_tf32(device)
    return model.to(device)


def check_normalisation(card: ModelCard, dataset_stats: dict, checkpoint_url: str, data_url: str) -> None:
    """The data must be normalised exactly as the model's training data was."""
    same = np.allclose(card.stats["mean"], dataset_stats["mean"], rtol=0, atol=1e-12) and np.allclose(
        card.stats["std"], dataset_stats["std"], rtol=0, atol=1e-12
    )
    if not same:
        raise UserError(
            f"{data_url}: normalised with other statistics than {checkpoint_url} was trained on; "
            "re-shard it with `python -m pipeline ... --stats <the training data's stats.json>`"
        )

"""Checkpoint contents for the tests that write them."""

import dataclasses
from pathlib import Path

import torch

from train import checkpoint


def training_state(step: int, weights: dict | None = None) -> checkpoint.TrainingState:
    """A minimal state.pt: ``step`` and ``weights``, everything else empty."""
    return checkpoint.TrainingState(
        model=weights or {},
        optimizer={},
        scheduler={},
        train_stream={},
        dev_stream={},
        history=[],
        step=step,
        elapsed_s=0.0,
        best=None,
        progress=[],
        rng=[],
        world_size=1,
        config={},
        fingerprints={},
    )


def other_model(model: str, folder: Path, **changes) -> str:
    """``folder/other/model.pt``: the model.pt at ``model`` with its weights moved by noise (another
    model of the same shape) and ``changes`` made to its card."""
    card = checkpoint.ModelCard.load(model)
    generator = torch.Generator().manual_seed(7)
    weights = {
        k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in card.model.items()
    }
    url = str(folder / "other" / "model.pt")
    dataclasses.replace(card, model=weights, **changes).publish(url)
    return url

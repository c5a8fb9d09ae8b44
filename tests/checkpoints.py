"""Checkpoint contents for the tests that write them."""

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

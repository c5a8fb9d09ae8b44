"""What a run reports while it trains, besides metrics.csv and curves.png (train/report.py).

- Accelerate's trackers (``report_to``: TensorBoard, W&B, MLflow; ``auto`` = TensorBoard when its
  package is installed): every ``log_every_steps`` optimiser steps the training loss, learning rate,
  gradient norm, real frames/s and padding efficiency of the steps since the last record; every
  epoch dev distance, PER and the epoch's time; once, the config as hyperparameters. Only rank 0
  writes (Accelerate's rule). Files go to ``<out>/tensorboard`` for a local run folder, else to a
  local ``--log-dir`` (default ``runs/<run name>``).
- Progress: shards.progress (a tqdm bar on a terminal, else a log line every 30 s) with the loss and
  real frames/s.
"""

import importlib.util
import logging
import time
from dataclasses import dataclass, field

from shards import progress

log = logging.getLogger("train")

TRACKERS = ("tensorboard", "wandb", "mlflow")
TRACKER_FOLDER = "tensorboard"  # under the log dir: Accelerate's project name


def trackers(report_to: str) -> list[str]:
    """The Accelerate trackers ``report_to`` names."""
    if report_to == "auto":
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    if report_to == "all":
        return list(TRACKERS)
    return [] if report_to == "none" else [report_to]


def log_dir(out: str, chosen: str | None) -> str:
    """Where tracker files go: ``chosen``, else the run folder when it is local, else runs/<name>."""
    if chosen:
        return chosen
    if "://" not in out or out.startswith("file://"):
        return out.removeprefix("file://")
    return f"runs/{out.rstrip('/').rsplit('/', 1)[-1]}"


def hyperparameters(config: dict) -> dict:
    """The config as trackers take it (TensorBoard's hparams want scalars and strings)."""
    return {key: str(value) if isinstance(value, list | tuple) else value for key, value in config.items()}


@dataclass
class StepWindow:
    """Running sums since the last tracker record."""

    loss_sum: float = 0.0
    batches: int = 0
    frames: int = 0
    padded_frames: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, frames: int, padded_frames: int) -> None:
        """One batch; its loss is added by the trainer when it reads the device's running sum."""
        self.batches += 1
        self.frames += frames
        self.padded_frames += padded_frames

    def figures(self, lr: float, grad_norm: float) -> dict:
        """The window's figures, for a tracker record."""
        seconds = max(time.monotonic() - self.started, 1e-9)
        return {
            "train/loss": self.loss_sum / max(self.batches, 1),
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "train/frames_per_s": self.frames / seconds,
            "train/padding_efficiency": self.frames / max(self.padded_frames, 1),
        }


@dataclass
class EpochTotals:
    """One rank's running totals of the epoch in progress (saved per rank in state.pt as a dict)."""

    loss_sum: float = 0.0  # of the batches' mean losses
    batches: int = 0
    frames: int = 0  # real (unpadded) frames
    utterances: int = 0  # trained on, repeats that only even out batch counts left out
    seconds: float = 0.0  # of training, this epoch

    def add_batch(self, frames: int, utterances: int) -> None:
        """One batch; its loss is added when the device's running sum is read."""
        self.batches += 1
        self.frames += frames
        self.utterances += utterances

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.batches, 1)

    @classmethod
    def from_dict(cls, saved: dict) -> "EpochTotals":
        """From a checkpoint's dict; totals an older file lacks start at zero."""
        return cls(**{name: saved[name] for name in cls.__dataclass_fields__ if name in saved})

    @classmethod
    def over_ranks(cls, per_rank: list["EpochTotals"]) -> "EpochTotals":
        """The ranks' totals as one: sums, and the seconds of the slowest rank (they run side by side)."""
        return cls(
            loss_sum=sum(t.loss_sum for t in per_rank),
            batches=sum(t.batches for t in per_rank),
            frames=sum(t.frames for t in per_rank),
            utterances=sum(t.utterances for t in per_rank),
            seconds=max((t.seconds for t in per_rank), default=0.0),
        )


class EpochProgress(progress.Progress):
    """shards.progress for a training epoch: batches, with the loss and real frames/s."""

    def __init__(self, total: int, done: int, name: str, shown: bool):
        super().__init__(total, name, "batch", done=done, shown=shown, log=log)
        self.frames = 0

    def add(self, frames: int, loss: float | None) -> None:
        """One batch; ``loss`` is the latest record's mean (the step's own stays on the device)."""
        self.frames += frames
        seconds = max(time.monotonic() - self.started, 1e-9)
        figures = {"loss": "…" if loss is None else f"{loss:.3f}", "frames/s": f"{self.frames / seconds:.0f}"}
        self.update(1, figures)

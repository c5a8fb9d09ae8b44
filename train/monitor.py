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

import torch

from shards import progress
from shards.errors import UserError

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


TOO_SHORT_SHARE = 0.1  # of a split's utterances left too few frames by the stride: refused above


class StrideTooLarge(UserError):
    """The time stride leaves too many utterances fewer output frames than CTC needs."""


def ctc_frame_check(split: str, rows: list[dict], output_frames: torch.Tensor, stride: int) -> str | None:
    """Before training: the utterances of ``split`` (manifest rows) whose output frames after the
    time stride are fewer than CTC needs for their labels (one per phoneme, a blank between equal
    neighbours: the manifest's ctc_frames; n_phonemes in datasets written before it). Their loss
    would be infinite, zeroed by zero_infinity: they would teach nothing. A warning naming them, or
    :class:`StrideTooLarge` when more than TOO_SHORT_SHARE of the split is; None when all fit."""
    needed = [row.get("ctc_frames") or row["n_phonemes"] or 0 for row in rows]
    short = [
        row["id"] for row, need, have in zip(rows, needed, output_frames.tolist(), strict=True) if have < need
    ]
    if not short:
        return None
    message = (
        f"{split}: {len(short)} of {len(rows)} utterances have fewer output frames at time stride {stride} "
        f"than CTC needs for their labels (e.g. {', '.join(short[:3])}): they cannot be learnt"
    )
    if len(short) > TOO_SHORT_SHARE * len(rows):
        raise StrideTooLarge(f"{message}; use smaller strides (strides=[1,2] or [1,1])")
    return message


BLANK_ALARM_EPOCHS = 3  # epochs a CTC model may take to emit its first labels
BLANK_ALARM_SHARE = 0.95  # of the dev utterances decoded to nothing


def blank_alarm(history: list[dict], time_stride: int) -> str | None:
    """The warning for a run still emitting only blanks after its first BLANK_ALARM_EPOCHS epochs
    (on the live weights' greedy dev decoding), with the usual causes; None otherwise."""
    if len(history) < BLANK_ALARM_EPOCHS or history[-1]["dev_empty_share"] < BLANK_ALARM_SHARE:
        return None
    last = history[-1]
    return (
        f"epoch {last['epoch']}: after {len(history)} epochs the model still emits only blanks "
        f"({last['dev_empty_share']:.0%} of dev utterances decode to nothing, {last['dev_blank_share']:.0%} "
        f"of output frames are blank); usual causes: a learning rate too high (the loss stalls or "
        f"diverges) or too low, too few steps yet (small data or large batches), a time stride "
        f"({time_stride}) that leaves too few frames for the labels (checked when training starts), "
        "transcripts that do not belong to their features, or features not normalised"
    )


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

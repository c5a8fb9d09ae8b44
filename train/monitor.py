"""What a run reports while it trains, besides metrics.csv and curves.png (train/report.py).

- Accelerate's trackers (``report_to``: TensorBoard, W&B, MLflow; ``auto`` = TensorBoard when its
  package is installed): every ``log_every_steps`` optimiser steps the training loss, learning rate,
  gradient norm, real frames/s and padding efficiency of the steps since the last record; every
  epoch dev distance, PER and the epoch's time; once, the config as hyperparameters. Only rank 0
  writes (Accelerate's rule). Files go to ``<out>/tensorboard`` for a local run folder, else to a
  local ``--log-dir`` (default ``runs/<run name>``).
- Progress: a tqdm bar when stderr is a terminal; otherwise a log line every ``PROGRESS_EVERY_S``
  seconds with the same figures, so a log file holds no progress-bar spam.
"""

import importlib.util
import logging
import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

log = logging.getLogger("train")

TRACKERS = ("tensorboard", "wandb", "mlflow")
PROGRESS_EVERY_S = 30.0
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

    def add(self, loss: float, frames: int, padded_frames: int) -> None:
        self.loss_sum += loss
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


class Progress:
    """A tqdm bar on a terminal; else a log line every PROGRESS_EVERY_S (batches, loss, frames/s, ETA)."""

    def __init__(self, total: int, done: int, name: str, shown: bool):
        self.total, self.done, self.name = total, done, name
        self.shown, self.terminal = shown, sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=done, desc=name, unit="batch", mininterval=2,
                        disable=not (shown and self.terminal))  # fmt: skip
        self.started = self.last_line = time.monotonic()
        self.first, self.frames = done, 0

    def update(self, loss: float, frames: int) -> None:
        self.done += 1
        self.frames += frames
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.3f}")
        now = time.monotonic()
        if self.shown and not self.terminal and now - self.last_line >= PROGRESS_EVERY_S:
            self.last_line = now
            rate = (self.done - self.first) / max(now - self.started, 1e-9)
            log.info(
                "%s: batch %d/%d, loss %.3f, %.0f frames/s, ETA %.0f s",
                self.name, self.done, self.total, loss, self.frames / (now - self.started),
                (self.total - self.done) / max(rate, 1e-9),
            )  # fmt: skip

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_) -> None:
        self.bar.close()  # its line ended even when the loop raised: an error message starts a line

"""A running average of the model's weights during training (``average: ema | cumulative``).

The average is a second copy of the model on the device whose parameters are updated in place
after every ``average_every``-th optimiser step, with one ``torch._foreach_lerp_`` whose weight is
computed on the host from step counts: no update reads anything from the device.

- ``ema``: ``avg ← avg + w (θ − avg)`` with ``w = 1 − min(decay, (1 + n) / (10 + n))`` at the n-th
  update (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): early on the average
  follows the weights closely, so a short run's average is not stuck near the initialisation.
- ``cumulative``: ``w = 1 / n``: the plain mean of every update's weights since the start (icefall's
  ``update_averaged_model`` over the whole run; SWA's running mean).

Only parameters are averaged. BatchNorm's running statistics of the averaged model are the live
model's at the moment it is scored or saved (after training averages them over the ranks): they
were estimated under weights the average trails, which is what icefall and timm's ModelEmaV2 with
``buffers`` copied do; a recomputation pass over training batches (SWA's ``update_bn``) is not done.
Every rank keeps the same average (the same weights, the same updates), so nothing is exchanged.
"""

import copy

import torch
from torch import nn

from train.checkpoint import CheckpointError
from train.config import TrainConfig


class WeightAverage:
    def __init__(self, model: nn.Module, kind: str, decay: float, every: int):
        self.kind, self.decay, self.every = kind, decay, every
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @classmethod
    def of(cls, config: TrainConfig, model: nn.Module) -> "WeightAverage | None":
        """The average the settings ask for, starting from ``model``'s weights; None for ``none``."""
        if config.average == "none":
            return None
        return cls(model, config.average, config.average_decay, config.average_every)

    def weight(self) -> float:
        """How far the next (the n-th) update moves the average towards the live weights."""
        n = self.updates
        if self.kind == "cumulative":
            return 1.0 / n
        return 1.0 - min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, live: nn.Module, step: int) -> None:
        """After optimiser step ``step``: every ``every``-th step moves the average."""
        if step % self.every:
            return
        self.updates += 1
        torch._foreach_lerp_(list(self.model.parameters()), list(live.parameters()), self.weight())

    @torch.no_grad()
    def with_statistics_of(self, live: nn.Module) -> nn.Module:
        """The averaged model, its buffers (BatchNorm's running statistics) the live model's."""
        for mine, theirs in zip(self.model.buffers(), live.buffers(), strict=True):
            mine.copy_(theirs)
        return self.model

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "updates": self.updates,
            "parameters": {name: p.detach() for name, p in self.model.named_parameters()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict, where: str) -> None:
        """The average as saved; a checkpoint without one (of an earlier version) is refused."""
        if state.get("kind") != self.kind:
            raise CheckpointError(f"{where}: holds no {self.kind} weight average to continue")
        saved = state["parameters"]
        for name, parameter in self.model.named_parameters():
            parameter.copy_(saved[name])
        self.updates = state["updates"]

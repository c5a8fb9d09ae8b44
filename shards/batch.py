"""A padded batch of utterances, as the reader yields it and the model takes it."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from shards.sample import Utterance


@dataclass
class Batch:
    ids: list[str]
    features: torch.Tensor  # float32 (B, T, D), zero-padded
    feature_lengths: torch.Tensor  # int64 (B,)
    labels: torch.Tensor | None  # int64 (B, L), padded with the blank (0); None if unlabelled
    label_lengths: torch.Tensor | None  # int64 (B,)
    repeated: torch.Tensor  # bool (B,): a repeat that only evens out batch counts

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def as_repeat(self) -> "Batch":
        """The same utterances flagged as repeats (a stand-in for a skipped shard's batch)."""
        return dataclasses.replace(self, repeated=torch.ones_like(self.repeated))

    def _map(self, function) -> "Batch":
        labels = None if self.labels is None else function(self.labels)
        label_lengths = None if self.label_lengths is None else function(self.label_lengths)
        return Batch(
            self.ids,
            function(self.features),
            function(self.feature_lengths),
            labels,
            label_lengths,
            function(self.repeated),
        )


def collate(utterances: list[Utterance], repeated: bool = False) -> Batch:
    lengths = torch.tensor([len(u.features) for u in utterances], dtype=torch.int64)
    dim = utterances[0].features.shape[1]
    features = torch.zeros(len(utterances), int(lengths.max()), dim, dtype=torch.float32)
    for i, u in enumerate(utterances):
        features[i, : len(u.features)] = torch.from_numpy(u.features)
    labels = label_lengths = None
    if utterances[0].labels is not None:
        label_lengths = torch.tensor([len(u.labels) for u in utterances], dtype=torch.int64)
        labels = torch.zeros(len(utterances), int(label_lengths.max()), dtype=torch.int64)
        for i, u in enumerate(utterances):
            labels[i, : len(u.labels)] = torch.from_numpy(u.labels.astype(np.int64))
    flags = torch.full((len(utterances),), repeated, dtype=torch.bool)
    return Batch([u.id for u in utterances], features, lengths, labels, label_lengths, flags)

"""shards/batch.py: utterances padded into one batch (features with zeros, labels with the blank), and its moves."""

import numpy as np
import torch

from shards.batch import collate
from shards.sample import Utterance
from shards.vocab import BLANK


def _utterance(name: str, frames: int, labels: list[int] | None) -> Utterance:
    features = np.full((frames, 3), frames, np.float32)
    return Utterance(name, features, None if labels is None else np.array(labels, np.int16))


def test_features_are_zero_padded_to_the_longest_and_labels_padded_with_the_blank():
    batch = collate([_utterance("a", 2, [5, 6, 7]), _utterance("b", 4, [9]), _utterance("c", 1, [1, 2])])
    assert batch.ids == ["a", "b", "c"]
    assert batch.features.dtype == torch.float32 and batch.features.shape == (3, 4, 3)
    assert batch.feature_lengths.dtype == torch.int64 and batch.feature_lengths.tolist() == [2, 4, 1]
    expected = torch.zeros(3, 4, 3)
    expected[0, :2], expected[1, :4], expected[2, :1] = 2, 4, 1
    assert torch.equal(batch.features, expected)
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [
        [5, 6, 7],
        [9, BLANK, BLANK],
        [1, 2, BLANK],
    ]
    assert batch.label_lengths.dtype == torch.int64 and batch.label_lengths.tolist() == [3, 1, 2]
    assert batch.repeated.dtype == torch.bool and batch.repeated.tolist() == [False] * 3


def test_an_unlabelled_batch_has_no_labels():
    batch = collate([_utterance("a", 2, None), _utterance("b", 3, None)])
    assert batch.labels is None and batch.label_lengths is None and batch.features.shape == (2, 3, 3)


def test_repeats_are_flagged_so_they_count_for_nothing():
    utterances = [_utterance("a", 2, [1]), _utterance("b", 3, [2])]
    assert collate(utterances, repeated=True).repeated.tolist() == [True, True]
    stand_in = collate(utterances).as_repeat()
    assert stand_in.repeated.tolist() == [True, True] and stand_in.ids == ["a", "b"]
    assert torch.equal(stand_in.features, collate(utterances).features)


def test_a_move_carries_every_tensor_and_keeps_the_ids():
    moved = collate([_utterance("a", 2, [1, 2]), _utterance("b", 3, [3])]).to("meta")
    tensors = [moved.features, moved.feature_lengths, moved.labels, moved.label_lengths, moved.repeated]
    assert moved.ids == ["a", "b"] and {t.device.type for t in tensors} == {"meta"}
    assert [t.shape for t in tensors] == [(2, 3, 3), (2,), (2, 2), (2,), (2,)]
    unlabelled = collate([_utterance("a", 2, None)]).to("meta")
    assert (
        unlabelled.labels is None
        and unlabelled.label_lengths is None
        and unlabelled.features.device.type == "meta"
    )

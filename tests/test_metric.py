"""train/metric.py: the HW3P2 score, Levenshtein distance over PHONEME_MAP strings."""

import Levenshtein
import pytest

from shards.errors import UserError
from train.metric import Score, score


def test_scorer_is_levenshtein_over_phoneme_map_strings():
    cases = {0: (".hElO.", ".hElO."), 1: (".hElO.", ".hEl."), 2: ("", ".ab."), 3: (".ab.", "")}
    predictions = {k: p for k, (p, _) in cases.items()}
    solution = {k: s for k, (_, s) in cases.items()}
    result = score(predictions, solution, "here")
    expected = [Levenshtein.distance(p, s) for p, s in cases.values()]
    assert (result.mean_distance, result.utterances) == (sum(expected) / 4, 4)
    assert result.per == sum(expected) / sum(len(s) for _, s in cases.values())
    with pytest.raises(UserError, match="here: 1 ids of the solution are missing"):
        score({0: ".", 1: ".", 2: "."}, solution, "here")


def test_greedy_paths_count_their_blanks_and_empty_labellings_and_merge_adds_every_count():
    first, second = Score(), Score()
    first.add_path([0, 3, 3, 0, 4], [3, 4])  # 2 blank frames of 5, labels "3 4": exact
    first.add_path([0, 0, 0], [5])  # all blank: empty, one deletion
    second.add_path([7, 0, 7], [7, 7])
    assert (first.blank_frames, first.frames, first.empty, first.edits) == (5, 8, 1, 1)
    total = first.merge(second)
    assert (total.utterances, total.edits, total.blank_frames, total.frames, total.empty) == (3, 1, 6, 11, 1)
    assert total.blank_share == 6 / 11 and total.empty_share == 1 / 3

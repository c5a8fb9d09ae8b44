"""train/metric.py: the HW3P2 score, Levenshtein distance over PHONEME_MAP strings."""

import Levenshtein
import pytest

from shards.errors import UserError
from train.metric import score


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

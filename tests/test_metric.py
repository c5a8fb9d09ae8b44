"""train/metric.py: the HW3P2 score, Levenshtein distance over PHONEME_MAP strings."""

import subprocess
import sys
from pathlib import Path

import Levenshtein
import numpy as np
import pytest
import torch

from shards.errors import UserError
from shards.kaggle import public_rows
from train.metric import Score, boards, collapse, greedy_decode, greedy_paths, score

REPO = Path(__file__).resolve().parents[1]


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


def test_collapse_merges_repeats_drops_blanks_and_says_where_each_label_starts():
    assert collapse([0, 3, 3, 0, 3, 4, 4]) == ([3, 3, 4], [1, 4, 5])
    assert collapse([5, 2, 2, 5, 5, 2], blank=5) == ([2, 2], [1, 5])  # another blank index
    assert collapse([]) == ([], [])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_greedy_decoding_takes_each_frame_s_best_within_its_length(kind):
    log_probs = np.full((2, 4, 3), -5.0, dtype=np.float32)
    for b, path in enumerate([[1, 1, 0, 2], [2, 0, 2, 1]]):
        log_probs[b, range(4), path] = 0.0
    lengths = np.array([4, 3])
    if kind == "torch":
        log_probs, lengths = torch.from_numpy(log_probs), torch.from_numpy(lengths)
    assert greedy_paths(log_probs, lengths) == [[1, 1, 0, 2], [2, 0, 2]]
    assert greedy_decode(log_probs, lengths) == [[1, 2], [2, 2]]


def test_shares_and_means_of_one_frame_and_of_nothing():
    one = Score()
    one.add_path([0], [3])
    assert (one.blank_share, one.empty_share, one.mean_distance, one.per) == (1.0, 1.0, 1.0, 1.0)
    assert (Score().blank_share, Score().empty_share, Score().mean_distance, Score().per) == (0, 0, 0, 0)


def test_the_two_boards_split_the_solution_s_rows_and_add_up_to_the_whole():
    references = {k: "." + "ab"[k % 2] * (k % 5) for k in range(20)}
    predictions = {k: ".a" for k in range(20)}
    boards_ = boards(predictions, references, "here", 0.3)
    public = public_rows(list(references), 0.3)
    assert boards_["public"].utterances == len(public) == 6 and boards_["private"].utterances == 14
    for field in ("utterances", "edits", "reference_phonemes"):
        parts = getattr(boards_["public"], field) + getattr(boards_["private"], field)
        assert parts == getattr(boards_["all"], field)
    expected = sum(Levenshtein.distance(".a", references[k]) for k in public)
    assert boards_["public"].edits == expected
    with pytest.raises(
        UserError, match=r"here: 0 ids of the solution are missing .*, 1 are not in it \(e\.g\. \[20\]\)"
    ):
        boards({**predictions, 20: "."}, references, "here", 0.3)


def test_a_refused_submission_names_what_is_missing_and_what_is_extra_three_of_each():
    solution = {k: ".a." for k in range(10)}
    predictions = {k: ".a." for k in range(5, 16)}  # 0-4 missing, 10-15 extra
    expected = r"here: 5 ids of the solution are missing \(e\.g\. \[0, 1, 2\]\), 6 are not in it \(e\.g\. \[10, 11, 12\]\)"
    with pytest.raises(UserError, match=expected):
        score(predictions, solution, "here")


def test_greedy_paths_refuse_lengths_of_another_batch():
    with pytest.raises(ValueError):
        greedy_paths(np.zeros((2, 3, 4)), np.array([3]))


def test_the_metric_imports_no_torch():
    probe = "import sys, train.metric; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0

"""shards/kaggle.py: Kaggle's submission and solution files, read by row position."""

import subprocess
import sys

import pytest

from shards.errors import UserError
from shards.kaggle import ids_name, public_rows, read_labels

PINNED_PUBLIC_OF_10 = [0, 2, 7]  # the rule's answer for rows 0-9, pinned


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,predictions\n0,.ab.\n1,\n", {0: ".ab.", 1: ""}),  # Spring 2022 submission
        ("index,label\n1,.b.\n0,.a.\n", {0: ".a.", 1: ".b."}),  # later semesters, any row order
        ("id,label,Usage\n0,.a.,Public\n1,.b.,Private\n", {0: ".a.", 1: ".b."}),  # Kaggle solution
    ],
)
def test_kaggle_files_are_read_by_row_position(tmp_path, text, expected):
    path = tmp_path / "s.csv"
    path.write_text(text)
    assert read_labels(str(path)) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\n0,.a.\n0,.b.\n", "id 0 appears twice"),
        ("id,label\ntest-000016,.a.\n", "'test-000016' is not a row number"),
        ("id,label\n0,.a.,x\n", "line 2 has 3 columns, the header 2"),
        (
            "id,label,Usage\n0,.a.,Public\n1,.b.\n",
            "line 3 has 2 columns, the header 3",
        ),  # short, not only long
        ("id\n0\n", "at least two columns"),
        ("id\n0,.a.\n", "at least two columns"),  # the header decides, not the first row
    ],
)
def test_malformed_kaggle_files_are_named(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        read_labels(str(path))


@pytest.mark.parametrize(
    "submission, ids",
    [("out/submission.csv", "out/submission.ids.csv"), ("s3://b/run/sub", "s3://b/run/sub.ids.csv")],
)
def test_the_ids_file_sits_beside_the_submission(submission, ids):
    assert ids_name(submission) == ids


@pytest.mark.parametrize("rows", [1, 3, 9, 10, 1000, 1751])
def test_the_public_board_is_a_fixed_share_of_the_rows_whatever_their_order(rows):
    numbers = list(range(rows))
    public = public_rows(numbers)
    assert len(public) == round(0.3 * rows) and public <= set(numbers)
    assert public_rows(list(reversed(numbers))) == public  # the rows' numbers decide, not their order
    assert len(public_rows(numbers, 0.5)) == round(0.5 * rows)


@pytest.mark.parametrize("share", [0, 1, -0.5, 1.5, 2])
def test_a_public_share_that_is_not_a_fraction_of_the_board_is_refused(share):
    with pytest.raises(UserError, match=f"public share {share}: expected a fraction between 0 and 1"):
        public_rows(list(range(10)), share)


@pytest.mark.parametrize("share", [0.001, 0.999])
def test_the_edges_of_the_public_share_are_accepted(share):
    assert len(public_rows(list(range(1000)), share)) == round(share * 1000)


def test_the_public_board_is_pinned_so_a_score_never_changes_between_runs():
    # a change of the rule deals every board again: old public scores would not compare with new ones
    assert sorted(public_rows(list(range(10)))) == PINNED_PUBLIC_OF_10
    assert subprocess.run(
        [
            sys.executable,
            "-c",
            "from shards.kaggle import public_rows; print(sorted(public_rows(list(range(10)))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip() == str(PINNED_PUBLIC_OF_10)

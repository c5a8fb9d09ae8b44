"""eval/leaderboard.py: the board many writers append to, its cells, its ranking."""

import csv
import io
import multiprocessing

import fsspec
import pytest

from eval import leaderboard
from shards.errors import UserError


def _append_rows(args: tuple[str, int]) -> None:
    url, writer = args
    for i in range(25):
        leaderboard.append(url, {c: f"{writer}-{i}" if c == "run" else "0" for c in leaderboard.COLUMNS})


@pytest.mark.parametrize("where", ["local", "s3"])
def test_four_writers_lose_no_leaderboard_row(where, tmp_path, s3_bucket):
    url = f"{s3_bucket}/board.csv" if where == "s3" else str(tmp_path / "board.csv")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_rows, [(url, writer) for writer in range(4)])
    rows = leaderboard.read(url)
    assert len(rows) == 100 and len({r["run"] for r in rows}) == 100
    with fsspec.open(url, "rt") as handle:
        assert handle.read().count("time,run,") == 1  # one header, no torn or doubled file


@pytest.mark.parametrize("where", ["local", "s3"])
def test_leaderboard_cells_are_never_formulas_and_read_back_unchanged(where, tmp_path, s3_bucket):
    url = f"{s3_bucket}/board.csv" if where == "s3" else str(tmp_path / "board.csv")
    names = [
        '=HYPERLINK("http://x","y")',
        "+1",
        "-2",
        "@SUM(A1)",
        "\tx",
        "\rcr",
        "line\r\nbreak",
        "'=quoted",
        "'plain",
    ]
    for name in names:
        leaderboard.append(url, {c: name if c == "run" else "1" for c in leaderboard.COLUMNS})
    with fsspec.open(url, "rb") as handle:
        cells = [row[1] for row in csv.reader(io.StringIO(handle.read().decode(), newline=""))][1:]
    # Invariant: no stored cell starts with what a spreadsheet evaluates (OWASP: prefix a quote)
    assert not [c for c in cells if c[:1] in "=+-@\t\r"]
    # Invariant: reading gives every name back exactly, CR and quotes included
    assert [r["run"] for r in leaderboard.read(url)] == names


def test_a_board_edited_by_hand_reads_back_as_written(tmp_path):
    """Only the quote this project put before a formula is taken off: a cell someone typed
    (a formula, a tab) is read as it stands."""
    board = tmp_path / "board.csv"
    typed = ["=1+1", "\tnote", "'quoted by hand"]
    rows = [",".join(leaderboard.COLUMNS)] + [
        ",".join([value] + ["1"] * (len(leaderboard.COLUMNS) - 1)) for value in typed
    ]
    board.write_text("\r\n".join(rows) + "\r\n")
    assert [r["time"] for r in leaderboard.read(str(board))] == typed


def test_leaderboard_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "board.csv.lock").symlink_to(target)
    with pytest.raises(UserError, match="lock file is a symbolic link"):
        leaderboard.append(str(tmp_path / "board.csv"), dict.fromkeys(leaderboard.COLUMNS, "1"))
    assert target.read_text() == "keep me"


def test_an_older_leaderboard_file_stays_readable_and_gains_the_new_columns(tmp_path):
    board = tmp_path / "board.csv"
    old_columns = leaderboard.COLUMNS[: leaderboard.COLUMNS.index("rejected")]  # before rejected and the LM
    board.write_text(",".join(old_columns) + "\n" + ",".join(["old"] * len(old_columns)) + "\n")
    old = leaderboard.read(str(board))[0]
    assert all(old[c] == "" for c in ("rejected", "lm", "alpha", "beta"))
    leaderboard.append(str(board), dict.fromkeys(leaderboard.COLUMNS, "new"))
    rows = leaderboard.read(str(board))
    assert [r["run"] for r in rows] == ["old", "new"] and rows[1]["rejected"] == rows[1]["beta"] == "new"
    assert board.read_text().splitlines()[0] == ",".join(leaderboard.COLUMNS)


def test_the_board_ranks_lowest_distance_first_unscored_last_and_reads_empty_before_any_row(
    tmp_path, s3_bucket
):
    rows = [
        {"run": "unscored", "distance": "", "time": "1"},  # the test split: no solution to score with
        {"run": "worse", "distance": "10.5", "time": "2"},
        {"run": "best, later", "distance": "2.0", "time": "4"},
        {"run": "best", "distance": "2.0", "time": "3"},
        {"run": "nine", "distance": "9", "time": "5"},  # numbers, not strings: 9 < 10.5
    ]
    assert [r["run"] for r in leaderboard.ranked(rows)] == [
        "best",
        "best, later",
        "nine",
        "worse",
        "unscored",
    ]
    assert leaderboard.read(str(tmp_path / "none.csv")) == []
    assert leaderboard.read(f"{s3_bucket}/none.csv") == []
    nested = f"{s3_bucket}/boards/medium/board.csv"  # a key below folders, not at the bucket's root
    leaderboard.append(nested, dict.fromkeys(leaderboard.COLUMNS, "1"))
    assert [r["run"] for r in leaderboard.read(nested)] == ["1"]
    leaderboard.append(str(tmp_path / "board.csv"), dict.fromkeys(leaderboard.COLUMNS, "1"))
    lock = tmp_path / "board.csv.lock"
    assert not lock.stat().st_mode & 0o111, "the lock file is data, never executable"


@pytest.mark.parametrize("text", ["id,label\n0,ab\n", "not a leaderboard\n", "\xff\xfe binary"])
def test_a_file_that_is_not_a_leaderboard_is_neither_read_nor_rewritten(tmp_path, text):
    board = tmp_path / "submission.csv"  # --leaderboard given the submission by mistake
    board.write_bytes(text.encode("latin-1"))
    with pytest.raises(leaderboard.NotALeaderboard, match=f"{board}: not a leaderboard CSV"):
        leaderboard.read(str(board))
    with pytest.raises(leaderboard.NotALeaderboard, match=f"{board}: not a leaderboard CSV"):
        leaderboard.append(str(board), dict.fromkeys(leaderboard.COLUMNS, "1"))
    assert board.read_bytes() == text.encode("latin-1")


def test_rows_with_a_public_board_rank_by_it_as_kaggle_ranks_a_running_competition():
    rows = [
        {
            "run": "private-better",
            "distance": "3.0",
            "public_distance": "3.5",
            "private_distance": "2.8",
            "time": "1",
        },
        {
            "run": "public-better",
            "distance": "3.2",
            "public_distance": "2.9",
            "private_distance": "3.3",
            "time": "2",
        },
        {"run": "dev", "distance": "3.1", "public_distance": "", "private_distance": "", "time": "3"},
    ]
    assert [r["run"] for r in leaderboard.ranked(rows)] == ["public-better", "dev", "private-better"]


def test_an_ensemble_s_members_share_one_cell_and_a_single_checkpoint_keeps_its_value():
    joined = leaderboard.joined
    assert joined([7]) == 7 and joined(iter(["s3://b/run"])) == "s3://b/run"  # not turned into text
    assert joined(["run-a", "run-b", "run-c"]) == "run-a + run-b + run-c"
    assert joined(["s3://b/a/model.pt", "s3://b/b/model.pt"]) == "s3://b/a/model.pt + s3://b/b/model.pt"

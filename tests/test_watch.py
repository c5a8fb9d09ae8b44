"""eval/watch.py: scheduled evaluation of new checkpoints."""

import html
import subprocess
import sys
from pathlib import Path

from eval import leaderboard, lm
from tests.checkpoints import other_model
from tests.processes import REPO, why_failed


def test_watch_once_evaluates_only_new_checkpoints(trained, tmp_path):
    data, model, _ = trained
    runs = str(Path(model).parents[3])
    board = str(tmp_path / "board.csv")
    command = [
        sys.executable,
        "-m",
        "eval",
        "watch",
        "--runs",
        runs,
        "--data",
        data,
        "--leaderboard",
        board,
        "--beam",
        "1",
        "--once",
    ]
    page = tmp_path / "board.html"
    subprocess.run([*command, "--html", str(page)], check=True, capture_output=True, cwd=REPO)
    assert [r["checkpoint"] for r in leaderboard.read(board)] == [model]
    assert html.escape(model) in page.read_text()  # the page follows each new row
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    assert len(leaderboard.read(board)) == 1  # nothing new, nothing evaluated
    lm.build(data, 2, str(tmp_path / "phones.arpa"))
    with_lm = [
        *command[:-3],
        "--beam",
        "4",
        "--lm",
        str(tmp_path / "phones.arpa"),
        "--alpha",
        "0.5",
        "--beta",
        "1",
        "--once",
    ]
    for _ in range(2):  # the same checkpoint with an LM is another row, once
        subprocess.run(with_lm, check=True, capture_output=True, cwd=REPO)
    rows = leaderboard.read(board)
    assert [(r["beam"], r["lm"], r["alpha"], r["beta"]) for r in rows] == [
        ("1", "", "", ""),
        ("4", str(tmp_path / "phones.arpa"), "0.5", "1.0"),
    ]


def test_watch_with_a_checkpoint_evaluates_each_new_one_in_an_ensemble_with_it(trained, tmp_path):
    data, model, _ = trained
    partner = other_model(model, tmp_path)
    board = str(tmp_path / "board.csv")
    command = [sys.executable, "-m", "eval", "watch", "--runs", str(Path(model).parents[3]), "--data", data]
    command += ["--leaderboard", board, "--beam", "1", "--checkpoint", partner, "--once"]
    for _ in range(2):  # the second look finds the ensemble's row and evaluates nothing
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, why_failed(result.stderr)
    (row,) = leaderboard.read(board)
    assert row["checkpoint"] == f"{model}{leaderboard.MEMBERS}{partner}" and row["combine"] == "probs"
    alone = subprocess.run([*command[:-3], "--once"], capture_output=True, text=True, cwd=REPO)
    assert alone.returncode == 0, why_failed(alone.stderr)
    assert [r["checkpoint"] for r in leaderboard.read(board)][1:] == [model]  # alone: a row of its own

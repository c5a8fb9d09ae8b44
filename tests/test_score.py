"""eval/score.py: ``python -m eval score SUBMISSION SOLUTION`` prints the whole split's score and
Kaggle's two boards, the public one of the solution's fixed share of rows."""

import re

import pytest

from eval.cli import main
from shards.kaggle import labels_bytes, public_rows


def _write(path, labels: list[str], header: str = "id,label") -> str:
    path.write_bytes(labels_bytes(labels, header))
    return str(path)


def test_the_line_gives_the_whole_split_and_both_boards(tmp_path, capsys):
    truth = ["abc", "hello", "xy", "aaaa", "kk", "zzz", "mn", "pq", "rs", "tu"]
    guess = [
        "abc",
        "hallo",
        "x",
        "aaaa",
        "k",
        "zzz",
        "mn",
        "pq",
        "rs",
        "tuv",
    ]  # distances 0 1 1 0 1 0 0 0 0 1
    distances = [0, 1, 1, 0, 1, 0, 0, 0, 0, 1]
    solution = _write(tmp_path / "solution.csv", truth, header="index,label")  # either header style
    submission = _write(tmp_path / "submission.csv", guess)
    assert main(["score", submission, solution, "--public-share", "0.4"]) == 0
    public = public_rows(list(range(10)), 0.4)
    private = set(range(10)) - public
    line = capsys.readouterr().out.strip()
    numbers = re.fullmatch(
        rf"{re.escape(submission)}: mean Levenshtein distance ([\d.]+), PER ([\d.]+)%, 10 utterances; "
        r"public board ([\d.]+) \((\d+)\), private ([\d.]+) \((\d+)\)",
        line,
    )
    assert numbers, line
    whole, per, public_mean, public_count, private_mean, private_count = numbers.groups()
    assert float(whole) == pytest.approx(0.4)
    assert float(per) == pytest.approx(100 * 4 / sum(map(len, truth)), abs=5e-5)
    assert (int(public_count), int(private_count)) == (4, 6)
    assert float(public_mean) == pytest.approx(sum(distances[r] for r in public) / 4, abs=5e-5)
    assert float(private_mean) == pytest.approx(sum(distances[r] for r in private) / 6, abs=5e-5)


def test_the_default_public_share_is_kaggle_s_thirty_percent(tmp_path, capsys):
    labels = ["ab"] * 20
    path = _write(tmp_path / "same.csv", labels)
    assert main(["score", path, path]) == 0
    assert capsys.readouterr().out.strip().endswith("public board 0.0000 (6), private 0.0000 (14)")

"""Kaggle submission and solution files, and their score.

HW3P2's Kaggle competitions key rows by **position**: row k of a submission is the prediction
for the k-th file of ``test_order.csv``, and its id column holds k (0, 1, 2, …), never the
utterance's name. Spring 2022 takes ``id,predictions``, later semesters ``index,label``;
predictions are PHONEME_MAP strings. A solution file is keyed the same way (``id,label``;
further columns, such as Kaggle's ``Usage``, are ignored). Which utterance each position is
goes to a separate ``<submission>.ids.csv`` (``id,utterance``), never into the submission.
The demo corpus writes its solution file here, evaluation its submissions; ``train.metric``
scores them.
"""

import csv
import hashlib
import io

import fsspec

from shards.errors import UserError

HEADERS = {"id,predictions": ("id", "predictions"), "index,label": ("index", "label")}
PUBLIC_SHARE = 0.3  # of the test rows Kaggle scores on its public board; the rest rank at the end
PUBLIC_KEY = b"hw3p2-public-board"  # what the rows' places are drawn with: never changes between runs


def public_rows(rows: list[int], share: float = PUBLIC_SHARE) -> set[int]:
    """The rows on the public board: the ``round(share × n)`` whose keyed hash of their number is
    lowest. Fixed by the row numbers alone (the same set on every run and machine, whatever the
    order given); Kaggle's own split is hidden, so this one stands for it."""

    if not 0 < share < 1:
        raise UserError(f"public share {share}: expected a fraction between 0 and 1 (Kaggle's HW3P2: 0.3)")

    def place(row: int) -> bytes:
        return hashlib.blake2b(str(row).encode(), key=PUBLIC_KEY, digest_size=16).digest()

    return set(sorted(rows, key=place)[: round(share * len(rows))])


def _csv(header: tuple[str, str], rows) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode()


def labels_bytes(labels: list[str], header: str = "id,predictions") -> bytes:
    """A submission (or solution, header ``id,label``) for labels listed in ``test_order.csv`` order."""
    return _csv(tuple(header.split(",")), enumerate(labels))


def ids_bytes(order: list[str]) -> bytes:
    """The position → utterance id table that goes beside a submission."""
    return _csv(("id", "utterance"), enumerate(order))


def ids_name(submission: str) -> str:
    """``out/submission.csv`` → ``out/submission.ids.csv``."""
    stem = submission[: -len(".csv")] if submission.endswith(".csv") else submission
    return f"{stem}.ids.csv"


class KaggleFormatError(UserError, ValueError):
    """A submission or solution CSV that is not in Kaggle's HW3P2 format; the message names the line."""


def read_labels(url: str) -> dict[int, str]:
    """Row position → label string of a submission or solution CSV (either header style)."""
    with fsspec.open(url, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or len(rows[0]) < 2:
        raise KaggleFormatError(f"{url}: expected a CSV with a header and at least two columns (id, label)")
    labels: dict[int, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise KaggleFormatError(f"{url}: line {number} has {len(row)} columns, the header {len(rows[0])}")
        try:
            position = int(row[0])
        except ValueError:
            raise KaggleFormatError(
                f"{url}: line {number}: id {row[0]!r} is not a row number; Kaggle's HW3P2 ids are "
                "0-based positions in test_order.csv"
            ) from None
        if position in labels:
            raise KaggleFormatError(f"{url}: id {position} appears twice (line {number})")
        labels[position] = row[1]
    return labels

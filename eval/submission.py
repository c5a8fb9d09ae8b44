"""Kaggle-style submission files and their score.

A submission has one row per test utterance in ``test_order.csv`` order: ``id,predictions``
(Spring 2022) or ``index,label`` (later semesters), predictions in PHONEME_MAP characters.
A solution file is ``id,label``. The score is the mean Levenshtein distance over utterances.
"""

import csv
import io

import fsspec
import Levenshtein

HEADERS = {"id,predictions": ("id", "predictions"), "index,label": ("index", "label")}


def submission_bytes(predictions: dict[str, str], order: list[str], header: str = "id,predictions") -> bytes:
    id_column, label_column = HEADERS[header]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([id_column, label_column])
    writer.writerows((utterance_id, predictions[utterance_id]) for utterance_id in order)
    return text.getvalue().encode()


def read_labels(url: str) -> dict[str, str]:
    """id → label string of a submission or solution CSV (either header style)."""
    with fsspec.open(url, "rt") as handle:
        rows = list(csv.reader(handle))
    if not rows or len(rows[0]) != 2:
        raise ValueError(f"{url}: expected a two-column CSV with a header")
    labels: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise ValueError(f"{url}: line {number} has {len(row)} columns")
        if row[0] in labels:
            raise ValueError(f"{url}: id {row[0]!r} appears twice (line {number})")
        labels[row[0]] = row[1]
    return labels


def score(
    predictions: dict[str, str], solution: dict[str, str], where: str = "submission"
) -> tuple[float, float, int]:
    """(mean Levenshtein distance, PER, utterances); every solution id must be predicted, nothing else."""
    missing, extra = solution.keys() - predictions.keys(), predictions.keys() - solution.keys()
    if missing or extra:
        raise ValueError(
            f"{where}: {len(missing)} ids of the solution are missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} are not in it (e.g. {sorted(extra)[:3]})"
        )
    edits = sum(Levenshtein.distance(predictions[i], solution[i]) for i in solution)
    reference = sum(len(label) for label in solution.values())
    return edits / max(len(solution), 1), edits / max(reference, 1), len(solution)

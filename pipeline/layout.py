"""Finds the utterances of an HW3P2 data folder on any fsspec URL.

Layout: ``<root>/<split>/mfcc/<id>.npy``, ``<root>/<split>/transcript/<id>.npy`` for
labelled splits, and ``<root>/test/test_order.csv`` (a header, then file names in
submission order). Spring 2022 names the splits train/dev/test; later semesters
train-clean-100/dev-clean/test-clean. Output splits always take the short names.

An id seen anywhere (features, transcript, order file) becomes one utterance, so an id
missing a part is reported by the caller rather than silently dropped. Anything under those
names that is not a regular file (a named pipe, a device, a folder) is never opened: reading a
pipe would wait forever. Its utterance is refused, naming it.
"""

import csv
import io
from dataclasses import dataclass

from fsspec import AbstractFileSystem

from shards.errors import UserError

SPLIT_FOLDERS = {
    "train": ("train", "train-clean-100"),
    "dev": ("dev", "dev-clean"),
    "test": ("test", "test-clean"),
}
ORDER_FILE = "test_order.csv"


class LayoutError(UserError, ValueError):
    """The source folder does not have the HW3P2 layout."""


@dataclass(frozen=True)
class SourceUtterance:
    split: str
    id: str
    features: str  # path of mfcc/<id>.npy
    transcript: str | None  # path of transcript/<id>.npy; None for unlabelled splits
    has_features: bool  # False when only the transcript or the order file names the id
    has_transcript: bool
    refused: tuple[str, str] | None = None  # (file, reason) for a part that is not a regular file


@dataclass(frozen=True)
class SourceSplit:
    name: str  # train, dev or test
    folder: str  # full path of the split's folder
    labelled: bool  # has a transcript/ folder
    utterances: list[SourceUtterance]  # sorted by id
    order: list[str] | None  # ids in test_order.csv order, where the file exists


def _npy_entries(fs: AbstractFileSystem, folder: str) -> dict[str, tuple[str, str]]:
    """id → (path, fsspec type: "file", "directory", "other") of every ``*.npy`` directly in ``folder``."""
    found = {}
    for entry in fs.ls(folder, detail=True):
        path = entry["name"].rstrip("/")
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".npy"):
            found[name[: -len(".npy")]] = (path, entry.get("type", "file"))
    return found


def _not_regular(entries: dict[str, tuple[str, str]], utterance_id: str) -> tuple[str, str] | None:
    path, kind = entries.get(utterance_id, ("", "file"))
    if kind == "file":
        return None
    what = "a folder" if kind == "directory" else "a named pipe, socket or device"
    return path, f"{what}, not a regular file: refused without opening it"


def parse_order(text: str, where: str) -> list[str]:
    """Ids listed by a test_order.csv: a header line, then one file name per row (CSV, quoted where needed)."""
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    names = [row[0] for row in rows[1:]]
    ids = [name[: -len(".npy")] if name.endswith(".npy") else name for name in names]
    if len(set(ids)) != len(ids):
        raise LayoutError(f"{where}: lists an utterance more than once")
    return ids


def _read_order(fs: AbstractFileSystem, path: str) -> list[str] | None:
    if not fs.exists(path):
        return None
    if fs.info(path).get("type", "file") != "file":
        raise LayoutError(f"{path}: not a regular file (a named pipe, device or folder); refusing to read it")
    try:
        text = fs.cat_file(path).decode("utf-8")
    except UnicodeDecodeError as error:
        raise LayoutError(f"{path}: not UTF-8 text ({error})") from error
    return parse_order(text, path)


def _read_split(fs: AbstractFileSystem, name: str, folder: str) -> SourceSplit:
    features = _npy_entries(fs, f"{folder}/mfcc")
    labelled = fs.isdir(f"{folder}/transcript")
    transcripts = _npy_entries(fs, f"{folder}/transcript") if labelled else {}
    order = _read_order(fs, f"{folder}/{ORDER_FILE}")
    ids = sorted(set(features) | set(transcripts) | set(order or ()))
    utterances = [
        SourceUtterance(
            split=name,
            id=i,
            features=features.get(i, (f"{folder}/mfcc/{i}.npy",))[0],
            transcript=transcripts.get(i, (f"{folder}/transcript/{i}.npy",))[0] if labelled else None,
            has_features=i in features,
            has_transcript=i in transcripts,
            refused=_not_regular(features, i) or _not_regular(transcripts, i),
        )
        for i in ids
    ]
    return SourceSplit(name, folder, labelled, utterances, order)


def discover(fs: AbstractFileSystem, root: str) -> list[SourceSplit]:
    """The splits under ``root`` in train, dev, test order (those that exist)."""
    splits = []
    for name, folders in SPLIT_FOLDERS.items():
        present = [folder for folder in folders if fs.isdir(f"{root}/{folder}/mfcc")]
        if len(present) > 1:
            raise LayoutError(f"{root}: both {present[0]}/ and {present[1]}/ hold a {name} split")
        if present:
            splits.append(_read_split(fs, name, f"{root}/{present[0]}"))
    if not splits:
        expected = ", ".join(f"{f}/mfcc" for folders in SPLIT_FOLDERS.values() for f in folders)
        raise LayoutError(f"{root}: no HW3P2 split found (looked for {expected})")
    return splits

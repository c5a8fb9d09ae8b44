"""Finds the utterances of an HW3P2 data folder on any fsspec URL.

Layout: ``<root>/<split>/mfcc/<id>.npy``, ``<root>/<split>/transcript/<id>.npy`` for
labelled splits, and ``<root>/test/test_order.csv`` (a header, then file names in
submission order). Spring 2022 names the splits train/dev/test; later semesters
train-clean-100/dev-clean/test-clean. Output splits always take the short names.

An id seen anywhere (features, transcript, order file) becomes one utterance, so an id
missing a part is reported by the caller rather than silently dropped.
"""

from dataclasses import dataclass

from fsspec import AbstractFileSystem

SPLIT_FOLDERS = {
    "train": ("train", "train-clean-100"),
    "dev": ("dev", "dev-clean"),
    "test": ("test", "test-clean"),
}
ORDER_FILE = "test_order.csv"


class LayoutError(ValueError):
    """The source folder does not have the HW3P2 layout."""


@dataclass(frozen=True)
class SourceUtterance:
    split: str
    id: str
    features: str  # path of mfcc/<id>.npy
    transcript: str | None  # path of transcript/<id>.npy; None for unlabelled splits
    has_features: bool  # False when only the transcript or the order file names the id
    has_transcript: bool


@dataclass(frozen=True)
class SourceSplit:
    name: str  # train, dev or test
    folder: str  # full path of the split's folder
    labelled: bool  # has a transcript/ folder
    utterances: list[SourceUtterance]  # sorted by id
    order: list[str] | None  # ids in test_order.csv order, where the file exists

    @property
    def order_file(self) -> str:
        return f"{self.folder}/{ORDER_FILE}"


def _npy_ids(fs: AbstractFileSystem, folder: str) -> dict[str, str]:
    """id → path of every ``*.npy`` directly in ``folder``."""
    found = {}
    for path in fs.ls(folder, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".npy"):
            found[name[: -len(".npy")]] = path
    return found


def parse_order(text: str, where: str) -> list[str]:
    """Ids listed by a test_order.csv: a header line, then one file name per line."""
    lines = [line.strip() for line in text.splitlines()]
    names = [line.split(",")[0] for line in lines[1:] if line]
    ids = [name[: -len(".npy")] if name.endswith(".npy") else name for name in names]
    if len(set(ids)) != len(ids):
        raise LayoutError(f"{where}: lists an utterance more than once")
    return ids


def _read_split(fs: AbstractFileSystem, name: str, folder: str) -> SourceSplit:
    features = _npy_ids(fs, f"{folder}/mfcc")
    labelled = fs.isdir(f"{folder}/transcript")
    transcripts = _npy_ids(fs, f"{folder}/transcript") if labelled else {}
    order_path = f"{folder}/{ORDER_FILE}"
    order = parse_order(fs.cat_file(order_path).decode(), order_path) if fs.exists(order_path) else None
    ids = sorted(set(features) | set(transcripts) | set(order or ()))
    utterances = [
        SourceUtterance(
            split=name,
            id=i,
            features=features.get(i, f"{folder}/mfcc/{i}.npy"),
            transcript=transcripts.get(i, f"{folder}/transcript/{i}.npy") if labelled else None,
            has_features=i in features,
            has_transcript=i in transcripts,
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

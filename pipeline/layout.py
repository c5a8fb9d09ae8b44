"""Finds the utterances of an HW3P2 data folder on any fsspec URL.

Layout: ``<root>/<split>/mfcc/<id>.npy``, ``<root>/<split>/transcript/<id>.npy`` for
labelled splits, and ``<root>/test/test_order.csv`` (a header, then file names in
submission order). Spring 2022 names the splits train/dev/test; later semesters
train-clean-100/dev-clean/test-clean, and Fall 2022 shipped train-clean-360 beside
train-clean-100. Output splits always take the short names.

The train split reads every training folder there is (``train`` and every ``train-*`` holding an
``mfcc/`` folder), each utterance recording the folder it came from (the manifest's ``source``);
an id in two of them is kept in the first (in name order) and refused in the others. Dev and test
read one folder each. Any other folder under the root is named in the log as not read.

An id seen anywhere (features, transcript, order file) becomes one utterance, so an id
missing a part is reported by the caller rather than silently dropped. Anything under those
names that is not a regular file (a named pipe, a device, a folder) is never opened: reading a
pipe would wait forever. Its utterance is refused, naming it.
"""

import csv
import dataclasses
import io
import logging
from dataclasses import dataclass

from fsspec import AbstractFileSystem

from shards.errors import UserError

log = logging.getLogger("pipeline")

SPLIT_FOLDERS = {  # the train split also reads every other train-* folder (TRAIN_PREFIX)
    "train": ("train", "train-clean-100", "train-clean-360"),
    "dev": ("dev", "dev-clean"),
    "test": ("test", "test-clean"),
}
TRAIN_PREFIX = "train-"
ORDER_FILE = "test_order.csv"


class LayoutError(UserError, ValueError):
    """The source folder does not have the HW3P2 layout."""


@dataclass(frozen=True)
class SourceUtterance:
    split: str
    id: str
    folder: str  # the split folder it was found in, relative to the root (train-clean-360)
    features: str  # path of mfcc/<id>.npy
    transcript: str | None  # path of transcript/<id>.npy; None for unlabelled splits
    has_features: bool  # False when only the transcript or the order file names the id
    has_transcript: bool
    refused: tuple[str, str] | None = None  # (file, reason) for a part that is not a regular file


@dataclass(frozen=True)
class SourceSplit:
    name: str  # train, dev or test
    folders: tuple[str, ...]  # the folders it was read from, relative to the root, in name order
    labelled: bool  # has a transcript/ folder
    utterances: list[SourceUtterance]  # sorted by id (then folder)
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


def _read_folder(
    fs: AbstractFileSystem, name: str, root: str, folder: str
) -> tuple[bool, list[SourceUtterance], list[str] | None]:
    """Whether ``root/folder`` is labelled, its utterances (sorted by id) and its order file's ids."""
    path = f"{root}/{folder}"
    features = _npy_entries(fs, f"{path}/mfcc")
    labelled = fs.isdir(f"{path}/transcript")
    transcripts = _npy_entries(fs, f"{path}/transcript") if labelled else {}
    order = _read_order(fs, f"{path}/{ORDER_FILE}")
    ids = sorted(set(features) | set(transcripts) | set(order or ()))
    utterances = [
        SourceUtterance(
            split=name,
            id=i,
            folder=folder,
            features=features.get(i, (f"{path}/mfcc/{i}.npy",))[0],
            transcript=transcripts.get(i, (f"{path}/transcript/{i}.npy",))[0] if labelled else None,
            has_features=i in features,
            has_transcript=i in transcripts,
            refused=_not_regular(features, i) or _not_regular(transcripts, i),
        )
        for i in ids
    ]
    return labelled, utterances, order


def _read_split(fs: AbstractFileSystem, name: str, root: str, folders: list[str]) -> SourceSplit:
    """The split from each of its folders; an id already read from an earlier folder is refused."""
    labelled, utterances, order, first_folder = False, [], None, {}
    for folder in folders:
        folder_labelled, found, folder_order = _read_folder(fs, name, root, folder)
        labelled, order = labelled or folder_labelled, order if folder_order is None else folder_order
        for utterance in found:
            if utterance.id in first_folder:
                reason = f"utterance id also in {first_folder[utterance.id]}/ (kept there): ids are unique in a split"
                utterance = dataclasses.replace(utterance, refused=(utterance.features, reason))
            first_folder.setdefault(utterance.id, folder)
            utterances.append(utterance)
    utterances.sort(key=lambda u: (u.id, folders.index(u.folder)))
    return SourceSplit(name, tuple(folders), labelled, utterances, order)


def split_folders(fs: AbstractFileSystem, root: str) -> dict[str, list[str]]:
    """Split → the folders under ``root`` it reads (splits in train, dev, test order; those present)."""
    present = sorted(
        entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in (fs.ls(root, detail=True) if fs.isdir(root) else [])
        if entry.get("type") == "directory"
    )
    with_features = [name for name in present if _split_of(name) and fs.isdir(f"{root}/{name}/mfcc")]
    found = {}
    for split in SPLIT_FOLDERS:
        folders = [name for name in with_features if _split_of(name) == split]
        if len(folders) > 1 and split != "train":
            raise LayoutError(f"{root}: both {folders[0]}/ and {folders[1]}/ hold a {split} split")
        if folders:
            found[split] = folders
    read = {folder for folders in found.values() for folder in folders}
    for name in present:
        if name not in read:
            why = "no mfcc/ folder in it" if _split_of(name) else "not a split folder of the HW3P2 layout"
            log.warning("%s/%s/: not read (%s)", root, name, why)
    return found


def _split_of(name: str) -> str | None:
    """The split a folder of this name holds (train for every train-*), or None."""
    if name.startswith(TRAIN_PREFIX):
        return "train"
    return next((split for split, names in SPLIT_FOLDERS.items() if name in names), None)


def discover(fs: AbstractFileSystem, root: str) -> list[SourceSplit]:
    """The splits under ``root`` in train, dev, test order (those that exist)."""
    splits = [_read_split(fs, name, root, folders) for name, folders in split_folders(fs, root).items()]
    if not splits:
        expected = ", ".join(f"{f}/mfcc" for folders in SPLIT_FOLDERS.values() for f in folders)
        raise LayoutError(f"{root}: no HW3P2 split found (looked for {expected}, {TRAIN_PREFIX}*/mfcc)")
    return splits

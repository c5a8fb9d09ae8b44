"""pipeline/layout.py: which folders of an HW3P2 tree hold which split, every id found once, nothing opened that is not a file."""

import logging
import os
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.layout import LayoutError, discover, parse_order, split_folders

FS = LocalFileSystem()


def _tree(root: Path, files: list[str]) -> str:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read here")
    return str(root)


def _ids(split) -> list[tuple[str, str]]:
    return [(u.id, u.folder) for u in split.utterances]


@pytest.mark.parametrize(
    "names",
    [("train", "dev", "test"), ("train-clean-100", "dev-clean", "test-clean")],
    ids=["spring-2022", "later-semesters"],
)
def test_either_semester_s_folder_names_give_the_three_splits(tmp_path, names):
    train, dev, test = names
    root = _tree(
        tmp_path,
        [f"{train}/mfcc/a.npy", f"{train}/transcript/a.npy", f"{dev}/mfcc/b.npy", f"{dev}/transcript/b.npy"]
        + [f"{test}/mfcc/c.npy"],
    )
    splits = discover(FS, root)
    assert [(s.name, s.folders, s.labelled) for s in splits] == [
        ("train", (train,), True),
        ("dev", (dev,), True),
        ("test", (test,), False),
    ]
    (a,) = splits[0].utterances
    assert (a.split, a.id, a.features, a.transcript) == (
        "train",
        "a",
        f"{root}/{train}/mfcc/a.npy",
        f"{root}/{train}/transcript/a.npy",
    )
    assert a.has_features and a.has_transcript and a.refused is None
    (c,) = splits[2].utterances
    assert c.transcript is None and not c.has_transcript and splits[2].order is None


def test_every_training_folder_is_read_and_an_id_in_two_is_kept_in_the_first(tmp_path):
    files = ["train-clean-360/mfcc/x.npy", "train-clean-360/mfcc/z.npy", "train-clean-100/mfcc/x.npy"]
    files += ["train-clean-100/mfcc/y.npy"]
    (train,) = discover(FS, _tree(tmp_path, files))
    assert train.folders == ("train-clean-100", "train-clean-360")  # name order
    assert _ids(train) == [
        ("x", "train-clean-100"),
        ("x", "train-clean-360"),
        ("y", "train-clean-100"),
        ("z", "train-clean-360"),
    ]
    kept, clash = train.utterances[:2]
    assert kept.refused is None
    assert clash.refused == (
        f"{tmp_path}/train-clean-360/mfcc/x.npy",
        "utterance id also in train-clean-100/ (kept there): ids are unique in a split",
    )


def test_two_folders_of_one_evaluation_split_are_refused_naming_both(tmp_path):
    root = _tree(tmp_path, ["dev/mfcc/a.npy", "dev-clean/mfcc/a.npy"])
    with pytest.raises(LayoutError, match=rf"^{tmp_path}: both dev/ and dev-clean/ hold a dev split$"):
        split_folders(FS, root)


def test_folders_not_read_are_named_with_why(tmp_path, caplog):
    root = _tree(tmp_path, ["train/mfcc/a.npy", "dev/transcript/b.npy", "notes/readme.txt", "stray.txt"])
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert split_folders(FS, root) == {"train": ["train"]}
    assert sorted(record.getMessage() for record in caplog.records) == [
        f"{root}/dev/: not read (no mfcc/ folder in it)",
        f"{root}/notes/: not read (not a split folder of the HW3P2 layout)",
    ]


def test_an_id_missing_a_part_is_still_an_utterance_for_the_caller_to_report(tmp_path):
    files = ["train/mfcc/both.npy", "train/transcript/both.npy", "train/transcript/no-features.npy"]
    root = _tree(tmp_path, [*files, "train/mfcc/no-transcript.npy", "test/mfcc/t1.npy"])
    (tmp_path / "test" / "test_order.csv").write_text("file\nt1.npy\nonly-ordered.npy\n")
    train, test = discover(FS, root)
    parts = {u.id: (u.has_features, u.has_transcript) for u in train.utterances}
    assert parts == {"both": (True, True), "no-features": (False, True), "no-transcript": (True, False)}
    assert [(u.id, u.has_features) for u in test.utterances] == [("only-ordered", False), ("t1", True)]
    assert test.order == ["t1", "only-ordered"]


def test_an_id_with_only_a_transcript_and_a_place_in_the_order_is_kept_for_the_caller(tmp_path):
    root = _tree(tmp_path, ["dev/mfcc/a.npy", "dev/transcript/a.npy", "dev/transcript/b.npy"])
    (tmp_path / "dev" / "test_order.csv").write_text("file\na.npy\nb.npy\n")
    (dev,) = discover(FS, root)
    assert [(u.id, u.has_features, u.has_transcript) for u in dev.utterances] == [
        ("a", True, True),
        ("b", False, True),
    ]


def test_what_is_not_a_regular_file_is_refused_without_being_opened(tmp_path):
    root = _tree(tmp_path, ["train/mfcc/a.npy", "train/transcript/a.npy", "train/transcript/p.npy"])
    os.mkfifo(tmp_path / "train" / "mfcc" / "p.npy")  # opening it would wait forever
    (tmp_path / "train" / "mfcc" / "d.npy").mkdir()
    (train,) = discover(FS, root)
    refused = {u.id: u.refused for u in train.utterances}
    assert refused["a"] is None
    assert refused["p"] == (
        f"{root}/train/mfcc/p.npy",
        "a named pipe, socket or device, not a regular file: refused without opening it",
    )
    assert refused["d"] == (
        f"{root}/train/mfcc/d.npy",
        "a folder, not a regular file: refused without opening it",
    )


def test_an_order_file_that_is_not_a_file_or_not_text_is_refused_naming_it(tmp_path):
    root = _tree(tmp_path, ["test/mfcc/t.npy"])
    order = tmp_path / "test" / "test_order.csv"
    order.write_bytes(b"file\n\xff\xfe.npy\n")
    with pytest.raises(LayoutError, match=rf"^{order}: not UTF-8 text"):
        discover(FS, root)
    order.unlink()
    os.mkfifo(order)  # reading it would wait forever
    with pytest.raises(LayoutError, match=rf"^{order}: not a regular file"):
        discover(FS, root)
    order.unlink()
    order.mkdir()
    with pytest.raises(LayoutError, match=rf"^{order}: not a regular file"):
        discover(FS, root)


def test_the_order_file_s_header_is_skipped_npy_dropped_and_quotes_read():
    text = 'file\n"a,1.npy"\nb.npy,a second column\n\nc\n'
    assert parse_order(text, "order.csv") == ["a,1", "b", "c"]  # the first column names the file
    with pytest.raises(LayoutError, match=r"^order.csv: lists an utterance more than once$"):
        parse_order("file\nb.npy\nb\n", "order.csv")


def test_a_tree_without_a_split_is_refused_saying_what_was_looked_for(tmp_path):
    root = _tree(tmp_path, ["mfcc/a.npy"])
    with pytest.raises(
        LayoutError, match=rf"^{tmp_path}: no HW3P2 split found \(looked for train/mfcc, .*train-\*/mfcc\)$"
    ):
        discover(FS, root)

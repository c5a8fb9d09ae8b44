"""Every kind of bad input lands in rejects.csv with its reason; nothing vanishes."""

import csv
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import Settings, TooManyRejects, build
from pipeline.synthetic import write_hw3p2
from pipeline.validate import ctc_min_frames, unrepresentable_id
from tests.processes import pipeline_command
from tests.written import read_split

GOOD = np.zeros((50, 13), dtype=np.float32)
GOOD_TRANSCRIPT = np.array(["<sos>", "SIL", "AA", "B", "SIL", "<eos>"])


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy header declaring ``shape`` float32, with 64 bytes of data behind it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(64)


def _nan_at_frame_7() -> np.ndarray:
    features = GOOD.copy()
    features[7, 3] = np.nan
    return features


# id → (mfcc file bytes, transcript file bytes (None: no file), the reason rejects.csv gives, the file it names)
BAD_TRAIN = {
    "garbage": (b"not a numpy file", _npy(GOOD_TRANSCRIPT), "unreadable .npy", "mfcc"),
    "truncated": (_npy(GOOD)[:300], _npy(GOOD_TRANSCRIPT), "truncated or padded .npy", "mfcc"),
    "trailing": (_npy(GOOD) + b"x" * 9, _npy(GOOD_TRANSCRIPT), "the file holds 2609", "mfcc"),
    # 192 bytes whose header declares 5 TB: refused before anything is allocated
    "bomb": (
        _header_only((10**11, 13)),
        _npy(GOOD_TRANSCRIPT),
        "header declares (100000000000, 13) float32 (5200000000000 bytes), the file holds 64",
        "mfcc",
    ),
    "badversion": (
        _npy(GOOD)[:6] + b"\x09\x00" + _npy(GOOD)[8:],
        _npy(GOOD_TRANSCRIPT),
        "version 9.0",
        "mfcc",
    ),
    "rawpickle": (
        pickle.dumps(GOOD),
        _npy(GOOD_TRANSCRIPT),
        "pickled data, not a .npy array: refused",
        "mfcc",
    ),
    "pickled": (
        _npy(np.array([GOOD, GOOD[:3]], dtype=object)),
        _npy(GOOD_TRANSCRIPT),
        "pickled .npy (object array) refused",
        "mfcc",
    ),
    "nan": (
        _npy(_nan_at_frame_7()),
        _npy(GOOD_TRANSCRIPT),
        "non-finite values in float32 (NaN/Inf, or beyond float32's range) in 1 of 50 frames",
        "mfcc",
    ),
    "inf": (_npy(GOOD + np.inf), _npy(GOOD_TRANSCRIPT), "non-finite values in float32", "mfcc"),
    # finite in float64, infinite as the float32 the shards store: once made every feature of the dataset 0
    "huge": (
        _npy(np.full((50, 13), 1e200)),
        _npy(GOOD_TRANSCRIPT),
        "(NaN/Inf, or beyond float32's range) in 50 of 50 frames",
        "mfcc",
    ),
    "large": (
        _npy(np.where(np.arange(50)[:, None] == 3, 3e7, GOOD)),
        _npy(GOOD_TRANSCRIPT),
        "values beyond ±100000 (no MFCC is that large) in 1 of 50 frames",
        "mfcc",
    ),
    "nocoefficients": (_npy(GOOD[:, :0]), _npy(GOOD_TRANSCRIPT), "zero frames or coefficients", "mfcc"),
    "rank": (
        _npy(GOOD[:, 0]),
        _npy(GOOD_TRANSCRIPT),
        "features have shape (50,), expected (frames, coefficients)",
        "mfcc",
    ),
    "cube": (
        _npy(GOOD[:, :, None]),
        _npy(GOOD_TRANSCRIPT),
        "features have shape (50, 13, 1), expected (frames, coefficients)",
        "mfcc",
    ),
    "dim": (
        _npy(np.zeros((50, 20), np.float32)),
        _npy(GOOD_TRANSCRIPT),
        "20 coefficients per frame, the data has 13",
        "mfcc",
    ),
    "zero": (_npy(GOOD[:0]), _npy(GOOD_TRANSCRIPT), "zero frames", "mfcc"),
    "ctrl\x07id": (
        _npy(GOOD),
        _npy(GOOD_TRANSCRIPT),
        "holds control, non-UTF-8 or unassigned characters (U+0007)",
        "mfcc",
    ),
    "empty": (_npy(GOOD), _npy(np.array(["<sos>", "<eos>"])), "empty transcript", "transcript"),
    "unknown": (
        _npy(GOOD),
        _npy(np.array(["<sos>", "SIL", "QQ", "<eos>"])),
        "unknown phoneme 'QQ' at position 1",
        "transcript",
    ),
    "picklescript": (
        _npy(GOOD),
        _npy(np.array(["SIL", "AA"], dtype=object)),
        "pickled .npy (object array) refused",
        "transcript",
    ),
    "numberscript": (
        _npy(GOOD),
        _npy(np.array([1, 2, 3])),
        "transcript is int64 (3,), expected a list of strings",
        "transcript",
    ),
    "scalarscript": (
        _npy(GOOD),
        _npy(np.array("SIL")),
        "transcript is <U3 (), expected a list",
        "transcript",
    ),
    "tablescript": (
        _npy(GOOD),
        _npy(np.array([["SIL", "AA"], ["B", "SIL"]])),
        "transcript is <U3 (2, 2), expected a list",
        "transcript",
    ),
    "notranscript": (_npy(GOOD), None, "missing: the id has features but no transcript", "transcript"),
    "nofeatures": (
        None,
        _npy(GOOD_TRANSCRIPT),
        "missing: the id has a transcript or test_order entry",
        "mfcc",
    ),
    # 6 phonemes with one repeat (AA AA) need 7 frames; there are 6
    "toolong": (
        _npy(GOOD[:6]),
        _npy(np.array(["<sos>", "SIL", "AA", "AA", "B", "CH", "SIL", "<eos>"])),
        "6 phonemes need at least 7 frames for CTC, features have 6",
        "transcript",
    ),
}
# ... and at the limits they are kept: with exactly 7 frames (the fewest CTC needs, not one more), and
# with values of exactly ±100000 (the bound is on what lies beyond it)
AT_THE_LIMITS = {
    "justenough": (_npy(GOOD[:7]), BAD_TRAIN["toolong"][1]),
    "atthebound": (
        _npy(np.where(np.arange(50)[:, None] == 3, [1e5, -1e5] * 6 + [1e5], GOOD)),
        _npy(GOOD_TRANSCRIPT),
    ),
}
GOOD_COUNT = 30 + len(AT_THE_LIMITS)


# files that must never be opened (reading a named pipe waits forever)
NOT_REGULAR = {"fifo": os.mkfifo, "folder": os.mkdir}
BAD_COUNT = len(BAD_TRAIN) + len(NOT_REGULAR)


@pytest.fixture(scope="module")
def bad_raw(tmp_path_factory) -> Path:
    root = write_hw3p2(tmp_path_factory.mktemp("bad"), counts=(30, 5, 5), seed=2)
    files = {i: (features, transcript) for i, (features, transcript, *_) in BAD_TRAIN.items()} | AT_THE_LIMITS
    for utterance_id, (features, transcript) in files.items():
        for folder, content in (("mfcc", features), ("transcript", transcript)):
            if content is not None:
                (root / "train" / folder / f"{utterance_id}.npy").write_bytes(content)
    for kind, make in NOT_REGULAR.items():
        make(root / "train" / "mfcc" / f"{kind}.npy")
        (root / "train" / "transcript" / f"{kind}.npy").write_bytes(_npy(GOOD_TRANSCRIPT))
    # the order file names a test utterance that has no features
    with open(root / "test" / "test_order.csv", "a") as order:
        order.write("ghost.npy\n")
    return root


def _rejects(dst: Path) -> dict[str, dict[str, str]]:
    rows = csv.DictReader(io.StringIO((dst / "rejects.csv").read_text(), newline=""))
    return {row["id"]: row for row in rows}


@pytest.mark.parametrize(
    "labels, frames", [([], 0), ([1, 2, 3], 3), ([1, 1, 1], 5), ([3, 2, 1], 3), ([1, 2, 2, 3, 4], 6)]
)
def test_ctc_needs_a_frame_per_label_and_a_blank_between_equal_neighbours(labels, frames):
    assert ctc_min_frames(labels) == frames


def test_every_bad_kind_is_rejected_with_its_reason(bad_raw, tmp_path):
    dst = tmp_path / "shards"
    build(Settings(str(bad_raw), str(dst), max_reject_fraction=1.0))
    rejects = _rejects(dst)
    for utterance_id, (_, _, reason, folder) in BAD_TRAIN.items():
        assert rejects[utterance_id]["split"] == "train"
        assert reason in rejects[utterance_id]["reason"], utterance_id
        assert rejects[utterance_id]["file"] == f"train/{folder}/{utterance_id}.npy"
    for kind in NOT_REGULAR:
        assert "not a regular file: refused without opening it" in rejects[kind]["reason"]
        assert rejects[kind]["file"] == f"train/mfcc/{kind}.npy"
    assert rejects["ghost"]["file"] == "test/mfcc/ghost.npy" and rejects["ghost"]["split"] == "test"
    # Invariant: every input utterance is in a shard or in rejects.csv, never both
    assert set(AT_THE_LIMITS) <= {u.id for _, u in read_split(str(dst), "train")}
    for split, count in (("train", GOOD_COUNT + BAD_COUNT), ("dev", 5), ("test", 6)):
        kept = {u.id for _, u in read_split(str(dst), split)}
        rejected = {i for i, row in rejects.items() if row["split"] == split}
        assert not kept & rejected
        assert len(kept | rejected) == count


def test_too_many_rejects_fails_after_writing_the_report(bad_raw, tmp_path):
    dst = tmp_path / "shards"
    bad = BAD_COUNT
    with pytest.raises(
        TooManyRejects, match=rf"train: kept {GOOD_COUNT}, rejected {bad} \({bad / (GOOD_COUNT + bad):.1%}\)"
    ):
        build(Settings(str(bad_raw), str(dst)))
    assert len(_rejects(dst)) == BAD_COUNT + 1
    # Invariant: a failed split is never published as complete
    assert not (dst / "train" / "index.json").exists()


def test_command_line_exits_non_zero_on_too_many_rejects(bad_raw, tmp_path):
    command = pipeline_command(bad_raw, tmp_path / "out", "--workers", "1")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert "too many rejects" in result.stderr and "rejects.csv" in result.stderr
    relaxed = subprocess.run([*command, "--max-rejects", "0.5"], capture_output=True, text=True)
    assert relaxed.returncode == 0, relaxed.stderr
    assert f"train: kept {GOOD_COUNT}, rejected {BAD_COUNT}" in relaxed.stdout


def test_an_unrepresentable_id_names_its_first_three_bad_characters():
    assert unrepresentable_id("a\x04\x01\x03\x02") == (
        "the id holds control, non-UTF-8 or unassigned characters (U+0001, U+0002, U+0003): cannot be represented"
    )
    assert unrepresentable_id("") == "empty id" and unrepresentable_id("tr-00001") is None

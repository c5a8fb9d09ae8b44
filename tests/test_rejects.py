"""Every kind of bad input lands in rejects.csv with its reason; nothing vanishes."""

import csv
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.build import Settings, TooManyRejects, build
from tests.conftest import read_split
from tests.hw3p2_fixture import write_hw3p2

GOOD = np.zeros((50, 13), dtype=np.float32)
GOOD_TRANSCRIPT = np.array(["<sos>", "SIL", "AA", "B", "SIL", "<eos>"])


def _save(path: Path, array) -> None:
    np.save(path, array, allow_pickle=True)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# id → (what to write in train/, the reason rejects.csv must give, the file it must name)
BAD_TRAIN = {
    "garbage": (
        lambda d: (
            (d / "mfcc/garbage.npy").write_bytes(b"not a numpy file"),
            _save(d / "transcript/garbage.npy", GOOD_TRANSCRIPT),
        ),
        "unreadable .npy",
        "train/mfcc/garbage.npy",
    ),
    "truncated": (
        lambda d: (
            (d / "mfcc/truncated.npy").write_bytes(_npy(GOOD)[:300]),
            _save(d / "transcript/truncated.npy", GOOD_TRANSCRIPT),
        ),
        "unreadable .npy",
        "train/mfcc/truncated.npy",
    ),
    "rawpickle": (
        lambda d: (
            (d / "mfcc/rawpickle.npy").write_bytes(pickle.dumps(GOOD)),
            _save(d / "transcript/rawpickle.npy", GOOD_TRANSCRIPT),
        ),
        "pickled data, not a .npy array: refused",
        "train/mfcc/rawpickle.npy",
    ),
    "pickled": (
        lambda d: (
            _save(d / "mfcc/pickled.npy", np.array([GOOD, GOOD[:3]], dtype=object)),
            _save(d / "transcript/pickled.npy", GOOD_TRANSCRIPT),
        ),
        "pickled .npy (object array) refused",
        "train/mfcc/pickled.npy",
    ),
    "nan": (
        lambda d: (
            _save(d / "mfcc/nan.npy", np.where(np.arange(50)[:, None] == 7, np.nan, GOOD)),
            _save(d / "transcript/nan.npy", GOOD_TRANSCRIPT),
        ),
        "non-finite values (NaN/Inf) in 1 of 50 frames",
        "train/mfcc/nan.npy",
    ),
    "inf": (
        lambda d: (
            _save(d / "mfcc/inf.npy", np.full((50, 13), np.inf, dtype=np.float32)),
            _save(d / "transcript/inf.npy", GOOD_TRANSCRIPT),
        ),
        "non-finite values (NaN/Inf) in 50 of 50 frames",
        "train/mfcc/inf.npy",
    ),
    "rank": (
        lambda d: (
            _save(d / "mfcc/rank.npy", np.zeros(50, dtype=np.float32)),
            _save(d / "transcript/rank.npy", GOOD_TRANSCRIPT),
        ),
        "features have shape (50,), expected (frames, coefficients)",
        "train/mfcc/rank.npy",
    ),
    "dim": (
        lambda d: (
            _save(d / "mfcc/dim.npy", np.zeros((50, 20), dtype=np.float32)),
            _save(d / "transcript/dim.npy", GOOD_TRANSCRIPT),
        ),
        "20 coefficients per frame, the data has 13",
        "train/mfcc/dim.npy",
    ),
    "zero": (
        lambda d: (
            _save(d / "mfcc/zero.npy", np.zeros((0, 13), dtype=np.float32)),
            _save(d / "transcript/zero.npy", GOOD_TRANSCRIPT),
        ),
        "zero frames",
        "train/mfcc/zero.npy",
    ),
    "empty": (
        lambda d: (
            _save(d / "mfcc/empty.npy", GOOD),
            _save(d / "transcript/empty.npy", np.array(["<sos>", "<eos>"])),
        ),
        "empty transcript",
        "train/transcript/empty.npy",
    ),
    "unknown": (
        lambda d: (
            _save(d / "mfcc/unknown.npy", GOOD),
            _save(d / "transcript/unknown.npy", np.array(["<sos>", "SIL", "QQ", "<eos>"])),
        ),
        "unknown phoneme 'QQ' at position 1",
        "train/transcript/unknown.npy",
    ),
    "picklescript": (
        lambda d: (
            _save(d / "mfcc/picklescript.npy", GOOD),
            _save(d / "transcript/picklescript.npy", np.array(["SIL", "AA"], dtype=object)),
        ),
        "pickled .npy (object array) refused",
        "train/transcript/picklescript.npy",
    ),
    "notranscript": (
        lambda d: _save(d / "mfcc/notranscript.npy", GOOD),
        "missing: the id has features but no transcript",
        "train/transcript/notranscript.npy",
    ),
    "nofeatures": (
        lambda d: _save(d / "transcript/nofeatures.npy", GOOD_TRANSCRIPT),
        "missing: the id has a transcript or test_order entry but no features",
        "train/mfcc/nofeatures.npy",
    ),
    "toolong": (
        # 6 phonemes with one repeat (AA AA) need 7 frames; there are 6
        lambda d: (
            _save(d / "mfcc/toolong.npy", GOOD[:6]),
            _save(
                d / "transcript/toolong.npy",
                np.array(["<sos>", "SIL", "AA", "AA", "B", "CH", "SIL", "<eos>"]),
            ),
        ),
        "6 phonemes need at least 7 frames for CTC, features have 6",
        "train/transcript/toolong.npy",
    ),
}


@pytest.fixture(scope="module")
def bad_raw(tmp_path_factory) -> Path:
    root = write_hw3p2(tmp_path_factory.mktemp("bad"), counts=(30, 5, 5), seed=2)
    for make, _, _ in BAD_TRAIN.values():
        make(root / "train")
    # the order file names a test utterance that has no features
    with open(root / "test" / "test_order.csv", "a") as order:
        order.write("ghost.npy\n")
    return root


def _rejects(dst: Path) -> dict[str, dict[str, str]]:
    rows = csv.DictReader(io.StringIO((dst / "rejects.csv").read_text()))
    return {row["id"]: row for row in rows}


def test_every_bad_kind_is_rejected_with_its_reason(bad_raw, tmp_path):
    dst = tmp_path / "shards"
    build(Settings(str(bad_raw), str(dst), max_reject_fraction=1.0))
    rejects = _rejects(dst)
    for utterance_id, (_, reason, file) in BAD_TRAIN.items():
        assert rejects[utterance_id]["split"] == "train"
        assert reason in rejects[utterance_id]["reason"], utterance_id
        assert rejects[utterance_id]["file"] == file
    assert rejects["ghost"]["file"] == "test/mfcc/ghost.npy" and rejects["ghost"]["split"] == "test"
    # Invariant: every input utterance is in a shard or in rejects.csv, never both
    for split, count in (("train", 30 + len(BAD_TRAIN)), ("dev", 5), ("test", 6)):
        kept = {u.id for _, u in read_split(str(dst), split)}
        rejected = {i for i, row in rejects.items() if row["split"] == split}
        assert not kept & rejected
        assert len(kept | rejected) == count


def test_too_many_rejects_fails_after_writing_the_report(bad_raw, tmp_path):
    dst = tmp_path / "shards"
    bad = len(BAD_TRAIN)
    with pytest.raises(TooManyRejects, match=rf"train: kept 30, rejected {bad} \({bad / (30 + bad):.1%}\)"):
        build(Settings(str(bad_raw), str(dst)))
    assert len(_rejects(dst)) == len(BAD_TRAIN) + 1
    # Invariant: a failed split is never published as complete
    assert not (dst / "train" / "index.json").exists()


def test_command_line_exits_non_zero_on_too_many_rejects(bad_raw, tmp_path):
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "--src",
        str(bad_raw),
        "--dst",
        str(tmp_path / "out"),
        "--workers",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert "too many rejects" in result.stderr and "rejects.csv" in result.stderr
    relaxed = subprocess.run([*command, "--max-rejects", "0.5"], capture_output=True, text=True)
    assert relaxed.returncode == 0, relaxed.stderr
    assert f"train: kept 30, rejected {len(BAD_TRAIN)}" in relaxed.stdout

"""pipeline/source.py: utterance files read many at once; a remote source read once (the write pass
reads the scan's copy), a local one simply twice; a store that fails fails the run, a bad file is
its utterance's reject."""

import uuid

import fsspec
import numpy as np
import pytest

from pipeline.layout import SourceUtterance
from pipeline.source import SourceReader
from pipeline.validate import CheckedUtterance, Rejected


def _save(fs, path: str, array: np.ndarray) -> None:
    with fs.open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _utterance(root: str, name: str, labelled: bool = True) -> SourceUtterance:
    return SourceUtterance(
        split="train",
        id=name,
        folder="train",
        features=f"{root}/train/mfcc/{name}.npy",
        transcript=f"{root}/train/transcript/{name}.npy" if labelled else None,
        has_features=True,
        has_transcript=labelled,
    )


def _put(fs, utterance: SourceUtterance, frames: int) -> np.ndarray:
    features = np.random.default_rng(frames).standard_normal((frames, 13)).astype(np.float32)
    _save(fs, utterance.features, features)
    if utterance.transcript is not None:
        _save(fs, utterance.transcript, np.array(["SIL", "AA", "B", "SIL"]))
    return features


@pytest.fixture
def remote():
    """A source that is not a local folder (fsspec's memory store): what the copy is for."""
    fs = fsspec.filesystem("memory")
    root = f"/src-{uuid.uuid4().hex}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_a_remote_source_is_read_once_the_write_pass_reads_the_scan_s_copy(remote, tmp_path):
    fs, root = remote
    a, b = _utterance(root, "a"), _utterance(root, "b")
    scanned = {"a": _put(fs, a, 50), "b": _put(fs, b, 60)}
    reader = SourceReader(f"memory://{root}", tmp_path / "copy")
    first = {u.id: checked for u, checked in reader.checked([a, b])}
    assert all(isinstance(c, CheckedUtterance) for c in first.values())
    _put(fs, a, 70)  # changed at the source after the scan: the write pass still sees what was scanned
    again = {u.id: checked for u, checked in reader.checked([a, b], again=True)}
    for name in "ab":
        assert (
            np.array_equal(again[name].features, scanned[name]) and again[name].digest == first[name].digest
        )
    # an utterance another machine scanned has no copy here: read from the source
    c = _utterance(root, "c", labelled=False)
    fresh = _put(fs, c, 80)
    ((_, checked),) = reader.checked([c], again=True)
    assert np.array_equal(checked.features, fresh) and checked.labels is None


def test_a_local_source_is_read_twice_and_copied_nowhere(tmp_path):
    root = str(tmp_path / "src")
    fs = fsspec.filesystem("file")
    a = _utterance(root, "a")
    fs.makedirs(f"{root}/train/mfcc", exist_ok=True)
    fs.makedirs(f"{root}/train/transcript", exist_ok=True)
    _put(fs, a, 50)
    reader = SourceReader(root, tmp_path / "copy")
    list(reader.checked([a]))
    changed = _put(fs, a, 70)
    ((_, checked),) = reader.checked([a], again=True)
    assert np.array_equal(checked.features, changed)  # the write pass's digest check then names it
    assert not (tmp_path / "copy").exists()


def test_a_bad_or_missing_file_is_its_utterance_s_reject_and_the_rest_are_read(remote, tmp_path):
    fs, root = remote
    good, garbage, absent = _utterance(root, "good"), _utterance(root, "garbage"), _utterance(root, "absent")
    _put(fs, good, 50)
    fs.pipe(garbage.features, b"not a numpy file")
    _save(fs, garbage.transcript, np.array(["SIL"]))
    reader = SourceReader(f"memory://{root}", tmp_path)
    results = {u.id: checked for u, checked in reader.checked([good, garbage, absent])}
    assert isinstance(results["good"], CheckedUtterance)
    assert isinstance(results["garbage"], Rejected) and results["garbage"].file == garbage.features
    assert isinstance(results["absent"], Rejected) and results["absent"].file == absent.features


def test_a_refused_part_is_never_opened(remote, tmp_path):
    fs, root = remote
    pipe = SourceUtterance(
        "train",
        "p",
        "train",
        f"{root}/train/mfcc/p.npy",
        None,
        True,
        False,
        refused=(f"{root}/train/mfcc/p.npy", "not a regular file (a named pipe)"),
    )
    ((_, rejected),) = SourceReader(f"memory://{root}", tmp_path).checked([pipe])
    assert isinstance(rejected, Rejected) and "named pipe" in rejected.reason


def test_a_store_that_fails_fails_the_run_naming_the_url_not_the_utterance(remote, tmp_path, monkeypatch):
    fs, root = remote
    a = _utterance(root, "a")
    _put(fs, a, 50)
    reader = SourceReader(f"memory://{root}", tmp_path)
    monkeypatch.setattr(
        reader.fs, "cat", lambda paths, on_error: {p: TimeoutError("timed out") for p in paths}
    )
    with pytest.raises(OSError, match=rf"^memory://{root}/train/mfcc/a.npy: cannot be read: timed out$"):
        list(reader.checked([a]))


def test_whatever_a_check_raises_beyond_its_own_refusals_is_that_utterance_s_reject(
    remote, tmp_path, monkeypatch
):
    """A numpy or parsing failure the checks did not foresee rejects one utterance, naming the error,
    instead of ending the scan."""
    fs, root = remote
    a, b = _utterance(root, "a"), _utterance(root, "b")
    _put(fs, a, 50)
    _put(fs, b, 60)

    def check(source, features, transcript):
        if source.id == "a":
            raise MemoryError("cannot allocate 8 EiB")
        return CheckedUtterance(source, np.zeros((60, 13), np.float32), [1], "digest")

    monkeypatch.setattr("pipeline.source.check_utterance", check)
    results = {u.id: checked for u, checked in SourceReader(f"memory://{root}", tmp_path).checked([a, b])}
    assert isinstance(results["a"], Rejected) and results["a"].file == a.features
    assert results["a"].reason == "unreadable: MemoryError: cannot allocate 8 EiB"
    assert isinstance(results["b"], CheckedUtterance)

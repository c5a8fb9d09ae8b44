"""shards/sample.py: an utterance as a shard stores it and back, never unpickled, every malformed member named."""

import io

import numpy as np
import pytest

from shards import sample
from shards.sample import Utterance
from shards.vocab import NUM_CLASSES


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _utterance(labels: bool = True, utterance_id: str = "103-1240-0000") -> Utterance:
    features = np.arange(5 * 13, dtype=np.float32).reshape(5, 13) / 7
    return Utterance(utterance_id, features, np.array([1, 40, 7], np.int16) if labels else None)


@pytest.mark.parametrize("labels", [True, False], ids=["labelled", "unlabelled"])
def test_an_utterance_comes_back_exactly(labels):
    original = _utterance(labels, utterance_id="spk.1-ü")  # ids may hold dots and any UTF-8
    members = sample.encode(original)
    assert set(members) == (
        {sample.ID, sample.FEATURES, sample.LABELS} if labels else {sample.ID, sample.FEATURES}
    )
    back = sample.decode(members)
    assert back.id == original.id and back.features.dtype == np.float32
    assert np.array_equal(back.features, original.features)
    if labels:
        assert back.labels.dtype == np.int16 and np.array_equal(back.labels, original.labels)
    else:
        assert back.labels is None


def test_encoding_stores_float32_features_and_int16_labels_whatever_it_is_given():
    given = Utterance("u", np.ones((4, 2), np.float64)[:, ::-1], np.array([3, 4], np.int64))  # not contiguous
    stored = sample.decode(sample.encode(given))
    assert stored.features.dtype == np.float32 and stored.labels.dtype == np.int16
    assert np.array_equal(stored.features, np.ones((4, 2))) and stored.labels.tolist() == [3, 4]


def test_a_key_is_the_position_zero_padded_to_nine_digits():
    assert sample.sample_key(0) == "000000000" and sample.sample_key(123456) == "000123456"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x04\x95" + b"\x00" * 20, "pickled data, not a .npy array: refused"),
        (b"PK\x03\x04 a zip", "unreadable .npy: no NUMPY header (10 bytes)"),
        (_npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "pickled .npy (object array) refused"),
        (
            _npy(np.ones((4, 3), np.float32))[:-5],
            "truncated or padded .npy: the header declares (4, 3) float32 (48 bytes), the file holds 43",
        ),
        (
            _npy(np.ones(2, np.int16)) + b"\x00",
            "truncated or padded .npy: the header declares (2,) int16 (4 bytes), the file holds 5",
        ),
        (
            sample.NPY_MAGIC + b"\x03\x00" + b"\x00" * 10,
            "unreadable .npy: format version 3.0 is not supported",
        ),
        (sample.NPY_MAGIC + b"\x01\x00\x04\x00{}  ", "unreadable .npy:"),
    ],
    ids=["pickle", "no-magic", "object-array", "truncated", "padded", "version-3", "bad-header"],
)
def test_a_bad_npy_is_refused_saying_why(data, message):
    with pytest.raises(ValueError) as refused:
        sample.load_npy(data)
    assert message in str(refused.value)


def test_every_payload_size_reads_back_whatever_the_header_s_length():
    """The bytes present are the file's length less the header's, for payloads that share bits with it."""
    for size in range(0, 600, 7):
        array = np.arange(size, dtype=np.uint8)
        assert np.array_equal(sample.load_npy(_npy(array)), array)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_both_npy_format_versions_numpy_writes_for_numbers_read_back(version):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    written = io.BytesIO()
    np.lib.format.write_array(written, array, version=version, allow_pickle=False)
    assert written.getvalue()[6:8] == bytes(version)
    assert np.array_equal(sample.load_npy(written.getvalue()), array)


def test_a_small_file_declaring_a_huge_array_is_refused_before_anything_is_allocated():
    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(forged, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    forged.write(b"\x00" * 8)  # one float64 where the header declares a trillion
    with pytest.raises(
        ValueError, match=r"declares \(1000000000000,\) float64 \(8000000000000 bytes\), the file holds 8"
    ):
        sample.load_npy(forged.getvalue())


def _members(**changes: bytes | None) -> dict[str, bytes]:
    members = sample.encode(_utterance())
    for name, value in changes.items():
        extension = {"features": sample.FEATURES, "labels": sample.LABELS, "id": sample.ID}[name]
        if value is None:
            del members[extension]
        else:
            members[extension] = value
    return members


LABELS_REFUSED = "labels are not phoneme indices 1..40"


@pytest.mark.parametrize(
    "changes, message",
    [
        pytest.param({"features": None}, "sample is malformed: 'feats.npy'", id="no-features"),
        pytest.param({"id": None}, "sample is malformed: 'id.txt'", id="no-id"),
        pytest.param(
            {"id": b"\xff\xfe"}, "sample is malformed: 'utf-8' codec can't decode", id="id-not-utf8"
        ),
        pytest.param(
            {"features": b"\x80\x04junk"}, "sample is malformed: pickled data", id="pickled-features"
        ),
        pytest.param(
            {"features": _npy(np.ones((3, 2), np.float64))}, "features are float64 (3, 2)", id="float64"
        ),
        pytest.param(
            {"features": _npy(np.ones((3, 2), np.float16))}, "features are float16 (3, 2)", id="float16"
        ),
        pytest.param({"features": _npy(np.ones(3, np.float32))}, "features are float32 (3,)", id="1-d"),
        pytest.param(
            {"features": _npy(np.ones((2, 3, 4), np.float32))}, "features are float32 (2, 3, 4)", id="3-d"
        ),
        pytest.param(
            {"features": _npy(np.ones((0, 13), np.float32))}, "features are float32 (0, 13)", id="empty"
        ),
        pytest.param({"labels": _npy(np.array([1, 2], np.int32))}, LABELS_REFUSED, id="int32-labels"),
        pytest.param({"labels": _npy(np.array([1, 2], np.int8))}, LABELS_REFUSED, id="int8-labels"),
        pytest.param({"labels": _npy(np.array([[1, 2]], np.int16))}, LABELS_REFUSED, id="2-d-labels"),
        pytest.param({"labels": _npy(np.array(3, np.int16))}, LABELS_REFUSED, id="0-d-labels"),
        pytest.param({"labels": _npy(np.array([0, 2], np.int16))}, LABELS_REFUSED, id="blank-label"),
        pytest.param(
            {"labels": _npy(np.array([1, NUM_CLASSES], np.int16))}, LABELS_REFUSED, id="past-the-vocabulary"
        ),
        pytest.param(
            {"labels": _npy(np.array([300, 1], np.int16))}, LABELS_REFUSED, id="far-past-the-vocabulary"
        ),
    ],
)
def test_a_malformed_sample_is_refused_naming_its_shard_and_member(changes, message):
    with pytest.raises(ValueError) as refused:
        sample.decode(_members(**changes), where="s3://b/train/shard-000003.tar")
    where = "s3://b/train/shard-000003.tar: sample is malformed: "
    assert str(refused.value).startswith(where) and message in str(refused.value)


def test_the_edges_of_the_label_range_are_accepted():
    members = _members(labels=_npy(np.array([1, NUM_CLASSES - 1], np.int16)))
    assert sample.decode(members).labels.tolist() == [1, NUM_CLASSES - 1]

"""The manifest's Parquet bytes: one writer, one reader, and a reader that leaves Arrow's threads nothing of Python's."""

import sys

from shards import manifest

ROWS = [
    {
        "key": f"{i:06d}",
        "id": f"utt-{i}",
        "shard": "shard-000000.tar",
        "n_frames": 100 + i,
        "n_phonemes": 10 + i,
        "ctc_frames": 12 + i,
        "source": "train-clean-100",
    }
    for i in range(64)
]


def test_the_rows_written_are_the_rows_read():
    assert manifest.read_manifest(manifest.manifest_bytes(ROWS)).to_pylist() == ROWS


def test_reading_leaves_arrow_no_reference_to_the_bytes():
    """Arrow's I/O threads drop what they were handed when they finish, which may be after the read has
    returned; were that a Python object, the thread would need the GIL, and one asking for it while the
    interpreter finalises aborts the process (SIGABRT, "terminate called without an active
    exception"). Handed a BytesIO, some of 300 reads still held the bytes when they returned."""
    data = manifest.manifest_bytes(ROWS)
    before = sys.getrefcount(data)
    held = 0
    for _ in range(300):
        table = manifest.read_manifest(data)
        held += sys.getrefcount(data) != before
        del table
    assert held == 0

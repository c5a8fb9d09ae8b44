"""shards/shard_file.py: a shard read only when its bytes are the index's, never expanded, retried through outages; the reader skipping a corrupt one when asked."""

import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards import manifest
from shards.manifest import read_split_metadata
from shards.reader import BatchStream
from shards.shard_file import CorruptShard, read_shard


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """Three train shards to damage copies of."""
    raw = write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(60, 4, 4), frames=(40, 400), seed=11)
    dst = tmp_path_factory.mktemp("shards")
    build(Settings(str(raw), str(dst), shard_mb=0.5))
    return str(dst)


def _ids(stream: BatchStream) -> list[list[str]]:
    return [batch.ids for batch in stream]


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_a_feature_byte(data: bytes) -> bytes:
    position = data.index(b"NUMPY") + 400  # inside the first feature array: still a valid tar
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]


def _corrupt_copy(dataset: str, tmp_path: Path, damage=_truncate) -> tuple[Path, str]:
    copy = tmp_path / "copy"
    fs = fsspec.filesystem("file")
    fs.copy(dataset, str(copy), recursive=True)
    index, _ = read_split_metadata(str(copy), "train")
    victim = copy / "train" / index.shards[1].name
    victim.write_bytes(damage(victim.read_bytes()))
    return copy, index.shards[1].name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, r"\d+ bytes with sha256 \w+…, index.json says"),
        (_flip_a_feature_byte, r"\d+ bytes with sha256 \w+…, index.json says"),
    ],
)
def test_a_corrupt_shard_is_an_error_naming_it(dataset, tmp_path, damage, message):
    copy, victim = _corrupt_copy(dataset, tmp_path, damage)
    with pytest.raises(CorruptShard, match=rf"train/{victim}: {message}"):
        _ids(BatchStream(str(copy), "train", max_frames=3000))


def _gzip_bomb(_: bytes) -> bytes:
    """A 64 MB tar of zeros, gzip-compressed to about 64 KB."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed:
        for _ in range(64):
            packed.write(bytes(1 << 20))
    return buffer.getvalue()


@pytest.mark.parametrize("index_updated", [False, True])
def test_a_compressed_shard_is_never_expanded(dataset, tmp_path, index_updated):
    copy, victim = _corrupt_copy(dataset, tmp_path, _gzip_bomb)
    if index_updated:  # the index vouches for the bomb's bytes: still opened as a plain tar only
        path = copy / "train" / manifest.INDEX
        document = json.loads(path.read_text())
        data = (copy / "train" / victim).read_bytes()
        entry = next(e for e in document["shards"] if e["name"] == victim)
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        path.write_text(json.dumps(document))
    # measured in a process of its own: tracemalloc.stop() while other threads allocate (s3fs's loop,
    # pyarrow's pool) crashes CPython before 3.12.9 (gh-128679), which took a whole test run down
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_READ, str(copy), victim], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    peak, message = result.stdout.split(" ", 1)
    assert ("not an uncompressed tar" if index_updated else "index.json says") in message
    # Invariant: memory stays at the compressed size; the 64 MB inside are never produced
    assert int(peak) < 8 << 20


_PEAK_OF_READ = """
import os, sys, tracemalloc
from shards.shard_file import CorruptShard, read_shard
from shards.manifest import read_split_metadata
copy, victim = sys.argv[1], sys.argv[2]
index, rows = read_split_metadata(copy, "train")
entry = next(e for e in index.shards if e.name == victim)
keys = {r["key"] for r in rows if r["shard"] == victim}
tracemalloc.start()
try:
    read_shard(f"{copy}/train/{victim}", entry, keys)
except CorruptShard as error:
    print(tracemalloc.get_traced_memory()[1], error, flush=True)
    os._exit(0)  # no tracemalloc.stop(), no finalisation with tracing on
os._exit(1)
"""


@pytest.mark.parametrize(
    "name", ["../../elsewhere/x.tar", "/etc/passwd", "shard-000001.tar.gz", "shard-1.tar"]
)
def test_index_naming_anything_but_its_own_shards_is_refused(dataset, tmp_path, name):
    copy, _ = _corrupt_copy(dataset, tmp_path, lambda data: data)
    path = copy / "train" / manifest.INDEX
    document = json.loads(path.read_text())
    document["shards"][0]["name"] = name
    path.write_text(json.dumps(document))
    with pytest.raises(
        ValueError, match=f"shard name '{re.escape(name)}' is not of the form shard-NNNNNN.tar"
    ):
        BatchStream(str(copy), "train")


def test_a_corrupt_shard_can_be_skipped_and_counts_stay_equal(dataset, tmp_path, caplog):
    copy, victim = _corrupt_copy(dataset, tmp_path)
    index, _ = read_split_metadata(str(copy), "train")
    skipped = next(s for s in index.shards if s.name == victim)
    stream = BatchStream(str(copy), "train", max_frames=3000, skip_corrupt=True)
    batches = list(stream)
    assert len(batches) == len(BatchStream(dataset, "train", max_frames=3000))
    assert f"skipping {victim} ({skipped.utterances} utterances)" in caplog.text
    assert any(b.repeated.all() for b in batches)


class FlakyFileSystem(LocalFileSystem):
    """``flaky://PATH``: the local file, whose next ``failing`` opens fail as a reset connection would."""

    protocol = "flaky"
    failing, failures = 0, []

    def _open(self, path, mode="rb", **kwargs):
        if FlakyFileSystem.failing > 0:
            FlakyFileSystem.failing -= 1
            FlakyFileSystem.failures.append(path)
            raise ConnectionResetError("connection reset by peer")
        return super()._open(path, mode, **kwargs)


def test_transient_read_errors_are_retried(dataset, monkeypatch):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(FlakyFileSystem, "failing", 2)
    monkeypatch.setattr(FlakyFileSystem, "failures", [])
    monkeypatch.setattr("shards.retry.FIRST_DELAY_S", 0.01)
    index, rows = read_split_metadata(dataset, "train")
    entry = index.shards[0]
    keys = {r["key"] for r in rows if r["shard"] == entry.name}
    samples = read_shard(f"flaky://{dataset}/train/{entry.name}", entry, keys)
    assert len(FlakyFileSystem.failures) == 2 and set(samples) == keys
    FlakyFileSystem.failing = 10**9  # the store stays away: past the deadline, an error naming the URL
    with pytest.raises(OSError, match=r"flaky://.*: still failing after \d+ s of retries: connection reset"):
        read_shard(f"flaky://{dataset}/train/{entry.name}", entry, keys, deadline_s=0.5)

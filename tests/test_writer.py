"""shards/writer.py: a shard is a plain tar of the samples in order, byte for byte the same on every run."""

import hashlib
import io
import tarfile

import numpy as np

from shards import sample
from shards.sample import Utterance
from shards.writer import write_shard


def _utterances(labels: bool = True) -> list[tuple[str, Utterance]]:
    rng = np.random.default_rng(3)
    return [
        (
            sample.sample_key(position),
            Utterance(
                f"utt.{position}",
                rng.standard_normal((frames, 13)).astype(np.float32),
                rng.integers(1, 41, size=frames // 10).astype(np.int16) if labels else None,
            ),
        )
        for position, frames in enumerate([30, 50, 80])
    ]


def test_the_members_are_each_sample_s_in_order_and_decode_back(tmp_path):
    utterances = _utterances()
    write_shard(utterances, tmp_path / "shard.tar")
    with tarfile.open(tmp_path / "shard.tar") as archive:
        names = archive.getnames()
        data = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}
    assert names == [
        f"{key}.{extension}" for key, _ in utterances for extension in ("feats.npy", "id.txt", "labels.npy")
    ]
    for key, utterance in utterances:
        back = sample.decode(
            {extension: data[f"{key}.{extension}"] for extension in ("feats.npy", "id.txt", "labels.npy")}
        )
        assert back.id == utterance.id and np.array_equal(back.features, utterance.features)
        assert np.array_equal(back.labels, utterance.labels)


def test_headers_carry_no_clock_owner_or_host(tmp_path):
    write_shard(_utterances(), tmp_path / "shard.tar")
    with tarfile.open(tmp_path / "shard.tar") as archive:
        members = archive.getmembers()
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname, m.type) for m in members} == {
        (0, 0o444, 0, 0, "", "", tarfile.REGTYPE)
    }
    assert (tmp_path / "shard.tar").read_bytes()[257:263] == b"ustar\x00"  # POSIX ustar, no pax headers


def test_the_same_samples_write_the_same_bytes(tmp_path):
    first = write_shard(_utterances(), tmp_path / "a.tar")
    second = write_shard(_utterances(), tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes() and first == second


def test_the_record_counts_the_shard_and_hashes_its_bytes(tmp_path):
    written = write_shard(_utterances(), tmp_path / "shard.tar")
    data = (tmp_path / "shard.tar").read_bytes()
    assert (written.utterances, written.frames, written.phonemes) == (3, 160, 3 + 5 + 8)
    assert written.bytes == len(data) and written.sha256 == hashlib.sha256(data).hexdigest()


def test_an_unlabelled_shard_has_no_labels_and_no_phonemes(tmp_path):
    written = write_shard(_utterances(labels=False), tmp_path / "shard.tar")
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "shard.tar").read_bytes())) as archive:
        assert not [name for name in archive.getnames() if name.endswith(".labels.npy")]
    assert (written.utterances, written.frames, written.phonemes) == (3, 160, 0)

"""Writes one WebDataset tar shard, byte for byte the same for the same samples.

Tar headers carry no clock time, user or host: mtime is 0, owner is empty, mode 0444,
so a rerun (or a resumed run) reproduces every shard exactly and its sha256 with it.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from shards import sample as sample_format


@dataclass(frozen=True)
class WrittenShard:
    utterances: int
    frames: int
    phonemes: int
    bytes: int
    sha256: str


def write_shard(utterances: Iterable[tuple[str, sample_format.Utterance]], path: Path) -> WrittenShard:
    """Write ``(key, utterance)`` pairs, in order, as one tar at local ``path``."""
    count = frames = phonemes = 0
    with open(path, "wb") as stream:
        writer = wds.TarWriter(stream, user="", group="", mode=0o444, mtime=0, encoder=False)
        for key, utterance in utterances:
            writer.write(sample_format.encode(utterance, key))
            count += 1
            frames += len(utterance.features)
            phonemes += 0 if utterance.labels is None else len(utterance.labels)
        writer.close()
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return WrittenShard(count, frames, phonemes, path.stat().st_size, digest.hexdigest())

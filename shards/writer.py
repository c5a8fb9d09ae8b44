"""Writes one WebDataset tar shard, byte for byte the same for the same samples.

Tar headers carry no clock time, user or host: mtime is 0, owner is empty, mode 0444,
so a rerun (or a resumed run) reproduces every shard exactly and its sha256 with it.
The standard library's tarfile writes it: webdataset's TarWriter would do the same but
imports torch, a second of start-up and hundreds of MB in every pipeline worker.
"""

import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shards import sample as sample_format


@dataclass(frozen=True)
class WrittenShard:
    utterances: int
    frames: int
    phonemes: int
    bytes: int
    sha256: str


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    archive.addfile(info, io.BytesIO(data))


def write_shard(utterances: Iterable[tuple[str, sample_format.Utterance]], path: Path) -> WrittenShard:
    """Write ``(key, utterance)`` pairs, in order, as one tar at local ``path``."""
    count = frames = phonemes = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for key, utterance in utterances:
            members = sample_format.encode(utterance)
            for extension in sorted(members):
                _add_member(archive, f"{key}.{extension}", members[extension])
            count += 1
            frames += len(utterance.features)
            phonemes += 0 if utterance.labels is None else len(utterance.labels)
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return WrittenShard(count, frames, phonemes, path.stat().st_size, digest.hexdigest())

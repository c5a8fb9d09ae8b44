"""Reading one shard file, at any fsspec URL: opened, checked against the index, parsed.

Nothing is parsed before the bytes' size and sha256 match ``index.json``, and the tar is opened
uncompressed only (a compressed one would expand in memory first). Every URL goes through fsspec
(``s3://`` as any other), read in 4 MB blocks, so a shard costs few requests. ``shards/writer.py``
is the one writer of the format; ``shards/sample.py`` decodes a sample's members.
"""

import hashlib
import io
import tarfile
from collections.abc import Iterator

import fsspec

from shards import sample
from shards.errors import UserError
from shards.manifest import ShardEntry
from shards.retry import IO_DEADLINE_S, with_retries

READ_BLOCK_BYTES = 1 << 22


class CorruptShard(UserError, RuntimeError):
    """A shard that cannot be read as the index describes it; the message names it."""


def verified_bytes(url: str, entry: ShardEntry) -> bytes:
    """The shard's raw bytes, read no further than the index's size and checked against its sha256."""
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "rb", block_size=READ_BLOCK_BYTES) as raw:
        data = raw.read(entry.bytes + 1)  # one byte more tells a longer file from the right one
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.bytes or digest != entry.sha256:
        size = f"{len(data)} bytes" if len(data) <= entry.bytes else f"more than {entry.bytes} bytes"
        raise CorruptShard(
            f"{url}: {size} with sha256 {digest[:12]}…, index.json says {entry.bytes} bytes with {entry.sha256[:12]}…"
        )
    return data


def tar_members(data: bytes, url: str) -> Iterator[tuple[str, str, bytes]]:
    """(sample key, member extension, bytes) of each regular file of an uncompressed tar."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if member.isfile():
                    key, _, extension = member.name.partition(".")
                    yield key, extension, archive.extractfile(member).read()
    except tarfile.TarError as error:
        raise CorruptShard(f"{url}: not an uncompressed tar ({type(error).__name__}: {error})") from error


def read_samples(url: str, entry: ShardEntry, keys: set[str]) -> dict[str, sample.Utterance]:
    """The samples ``keys`` of one shard, decoded; a missing or undecodable one is a CorruptShard."""
    members: dict[str, dict[str, bytes]] = {}
    for key, extension, content in tar_members(verified_bytes(url, entry), url):
        if key in keys:
            members.setdefault(key, {})[extension] = content
    missing = keys - members.keys()
    if missing:
        raise CorruptShard(f"{url}: lacks {len(missing)} planned samples, e.g. {sorted(missing)[0]}")
    try:
        return {key: sample.decode(parts, f"{url} sample {key}") for key, parts in members.items()}
    except ValueError as error:
        raise CorruptShard(str(error)) from error


def read_shard(
    url: str, entry: ShardEntry, keys: set[str], deadline_s: float = IO_DEADLINE_S
) -> dict[str, sample.Utterance]:
    """:func:`read_samples`, transient I/O failures retried with backoff for up to ``deadline_s``."""
    try:
        return with_retries(lambda: read_samples(url, entry, keys), url, deadline_s)
    except FileNotFoundError as error:
        raise CorruptShard(f"{url}: shard missing ({error})") from error

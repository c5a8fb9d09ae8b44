"""What a command wrote, read back independently of the project's writers: trees of bytes, a
split's samples through tarfile."""

import io
import tarfile
from collections import defaultdict
from pathlib import Path

import fsspec

from shards import manifest, sample
from shards.manifest import SplitIndex


def read_index(url: str, split: str) -> SplitIndex:
    with fsspec.open(f"{url}/{split}/{manifest.INDEX}", "rb") as handle:
        return SplitIndex.from_json(handle.read(), url)


def read_split(url: str, split: str) -> list[tuple[str, sample.Utterance]]:
    """Every (key, utterance) of a split, in shard order, read with tarfile (independently of the writer)."""
    found = []
    for entry in read_index(url, split).shards:
        with fsspec.open(f"{url}/{split}/{entry.name}", "rb") as handle:
            data = handle.read()
        members: dict[str, dict[str, bytes]] = defaultdict(dict)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                key, extension = member.name.split(".", 1)
                members[key][extension] = archive.extractfile(member).read()
        found += [(key, sample.decode(parts, f"{entry.name} sample {key}")) for key, parts in members.items()]
    return found


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path → content of every file under a local root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_tree_bytes(url: str) -> dict[str, bytes]:
    """Relative key → content of every object under an ``s3://`` prefix (``tree_bytes`` of a bucket)."""
    fs = fsspec.filesystem("s3")
    root = url.removeprefix("s3://").rstrip("/")
    return {path.removeprefix(root + "/"): fs.cat_file(path) for path in sorted(fs.find(root))}

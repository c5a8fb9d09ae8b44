import io
import os
import tarfile
import uuid
from collections import defaultdict
from pathlib import Path

import fsspec
import pytest

from shards import manifest, sample
from shards.manifest import SplitIndex
from tests.s3server import running_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on loopback for the whole session; clients find it via the environment."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        saved = {key: os.environ.get(key) for key in server.client_env()}
        os.environ.update(server.client_env())
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket: ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


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

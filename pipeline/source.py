"""Reads utterance files from the source URL, many at once.

Object storage is slow per request and may bill per request, so a remote source is read
once: the scan keeps a local copy of what it read, and the write pass reads that copy where
the same machine scanned it (on a cluster, a shard's utterances may have been scanned on
another machine: those are read from the source again). A local source is simply read twice
(the page cache makes the second read cheap).
"""

from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.layout import SourceUtterance
from pipeline.validate import CheckedUtterance, Rejected, check_utterance
from shards import s3
from shards.errors import UserError
from shards.retry import is_transient
from shards.store import Store


class InputChanged(UserError):
    """A source file whose bytes changed between the scan and the write pass."""


def check_source_and_destination(src: str, dst: str) -> None:
    """Both URLs reachable with this process's credentials and network (a clear line now, not a
    failure after the scan), and the object store's throttling answers counted."""
    for url in (src, dst):
        s3.count_throttling(url)
        s3.check_access(url)


def open_source_and_store(src: str, dst: str) -> tuple["SourceReader", Store]:
    """A task's reader of ``src`` and store at ``dst``, checked with this worker's credentials and
    network, which may not be the driver's."""
    check_source_and_destination(src, dst)
    store = Store(dst)
    return SourceReader(src, store.staging_folder("source-copy")), store


class SourceReader:
    def __init__(self, src: str, copy_dir: Path):
        self.fs, _ = fsspec.core.url_to_fs(src)
        self.copy_dir = None if isinstance(self.fs, LocalFileSystem) else copy_dir

    def _read(self, paths: list[str], again: bool) -> dict[str, bytes | Exception]:
        if not paths:
            return {}
        if again and self.copy_dir is not None:
            copies = {path: self.copy_dir / path.lstrip("/") for path in paths}
            here = {path: copy.read_bytes() for path, copy in copies.items() if copy.exists()}
            elsewhere = [path for path in paths if path not in here]
            if not elsewhere:
                return here
            contents = self.fs.cat(elsewhere, on_error="return")
            self._raise_store_failure(contents)
            return here | contents
        contents = self.fs.cat(paths, on_error="return")
        if self.copy_dir is not None:
            self._raise_store_failure(contents)
            for path, data in contents.items():
                if isinstance(data, bytes):
                    copy = self.copy_dir / path.lstrip("/")
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    copy.write_bytes(data)
        return contents

    def _raise_store_failure(self, contents: dict[str, bytes | Exception]) -> None:
        """A file that is missing or bad is that utterance's reject; a store that fails (unreachable,
        timing out) fails the run: its utterances are not bad, and must not be reported as such."""
        for path, data in contents.items():
            if isinstance(data, Exception) and is_transient(data):
                raise OSError(f"{self.fs.unstrip_protocol(path)}: cannot be read: {data}") from data

    def checked(
        self, utterances: list[SourceUtterance], again: bool = False
    ) -> Iterator[tuple[SourceUtterance, CheckedUtterance | Rejected]]:
        """Each utterance checked, or the reason it is refused; ``again`` on the write pass."""
        readable = [u for u in utterances if u.refused is None]  # a pipe is never opened
        paths = [u.features for u in readable if u.has_features]
        paths += [u.transcript for u in readable if u.has_transcript]
        contents = self._read(paths, again)
        for source in utterances:
            features = contents.get(source.features) if source.has_features else None
            transcript = contents.get(source.transcript) if source.has_transcript else None
            try:
                yield source, check_utterance(source, features, transcript)
            except Rejected as rejected:
                yield source, rejected
            except Exception as error:  # one bad file is one reject, whatever numpy raised
                yield source, Rejected(source.features, f"unreadable: {type(error).__name__}: {error}")

"""A dataset root on any fsspec URL (local folder or ``s3://bucket/prefix``), written atomically.

Nothing is ever visible under its final name half-written: a file is built in a local
staging folder and then published in one step. Locally that step is ``os.replace`` within
one file system; on object storage it is a single PUT or a multipart upload, which the
store only shows once the upload is completed.
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


def glob_urls(pattern: str) -> list[str]:
    """The URLs matching a glob ``pattern`` (a local path or any fsspec URL), sorted, each with the
    pattern's protocol (fsspec's glob gives paths without it)."""
    protocol = fsspec.core.split_protocol(pattern)[0]
    fs, path = fsspec.core.url_to_fs(pattern)
    prefix = f"{protocol}://" if protocol else ""
    return [prefix + found for found in sorted(fs.glob(path))]


STAGING = ".staging"  # local roots stage inside themselves so that os.replace never crosses devices


class Store:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self._staging = Path(self.root) / STAGING
        else:
            # one folder per destination, so that a rerun can clear what a killed run left
            digest = hashlib.sha1(self.url.encode()).hexdigest()[:16]
            self._staging = Path(tempfile.gettempdir()) / f"hw3p2-staging-{digest}"

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def list(self, relative: str) -> list[str]:
        """Names (not paths) of the files directly under ``relative``; empty if it does not exist."""
        try:
            entries = self.fs.ls(self.path(relative), detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def remove(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(relative), recursive=True)

    def staging_file(self, name: str) -> Path:
        """A fresh local path to build a file in before :meth:`publish`."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / f"{uuid.uuid4().hex}-{name}"

    def staging_folder(self, name: str) -> Path:
        """A local folder for intermediate files, removed with the staging area."""
        return self._staging / name

    def publish(self, staged: Path, relative: str) -> None:
        """Move a finished staged file to ``relative`` in one atomic step."""
        target = self.path(relative)
        if self.is_local:
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        else:
            try:
                self.fs.put_file(str(staged), target)
            finally:
                staged.unlink(missing_ok=True)

    def publish_bytes(self, data: bytes, relative: str) -> None:
        staged = self.staging_file(relative.rsplit("/", 1)[-1])
        staged.write_bytes(data)
        self.publish(staged, relative)

    def clear_staging(self) -> None:
        """Drop what an interrupted run left in staging (never visible under a final name)."""
        shutil.rmtree(self._staging, ignore_errors=True)


def publish_at(url: str, data: bytes) -> None:
    """Publish one file at a full URL, atomically (its folder is the store)."""
    folder, _, name = url.rstrip("/").rpartition("/")
    Store(folder or ".").publish_bytes(data, name)

"""A leaderboard CSV that many evaluation jobs append to at once, locally or on S3.

Every append rewrites the whole file in one atomic step, so a reader never sees a torn file,
and is serialised so that no row is lost: locally under an exclusive ``flock`` on a lock file
beside the CSV; on S3 by optimistic concurrency, a conditional PUT (``If-Match`` the ETag that
was read, or ``If-None-Match: *`` for a new file) retried with backoff when another job won.
"""

import csv
import fcntl
import io
import random
import time
from pathlib import Path

import fsspec
import fsspec.asyn

from shards.store import Store

COLUMNS = [
    "time",
    "run",
    "checkpoint",
    "epoch",
    "step",
    "split",
    "beam",
    "distance",
    "per",
    "utterances",
    "decode_seconds",
]
ATTEMPTS = 200


def _with_row(existing: bytes, row: dict) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    return existing + text.getvalue().encode()


def _append_local(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = path.read_bytes() if path.exists() else b""
        Store(str(path.parent)).publish_bytes(_with_row(existing, row), path.name)


async def _get_with_etag(fs, bucket: str, key: str) -> tuple[bytes, str]:
    """Content and ETag from one GET, so that they belong together."""
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return await body.read(), response["ETag"]


def _append_s3(url: str, row: dict) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    bucket, key = path.split("/", 1)
    for attempt in range(ATTEMPTS):
        try:
            existing, etag = fsspec.asyn.sync(fs.loop, _get_with_etag, fs, bucket, key)
            condition = {"IfMatch": etag}
        except FileNotFoundError:
            existing, condition = b"", {"IfNoneMatch": "*"}
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=_with_row(existing, row), **condition)
            return
        except OSError as error:  # s3fs turns 412 Precondition Failed into an OSError
            if "pre-condition" not in str(error).lower() and "precondition" not in str(error).lower():
                raise
            time.sleep(random.uniform(0, 0.05 * min(attempt + 1, 10)))
    raise RuntimeError(f"{url}: gave up appending after {ATTEMPTS} conflicting writers")


def append(url: str, row: dict) -> None:
    """Add one row (a dict with COLUMNS keys) to the leaderboard at ``url``."""
    if url.startswith("s3://"):
        _append_s3(url, row)
    else:
        _append_local(Path(url.removeprefix("file://")), row)


def read(url: str) -> list[dict]:
    try:
        with fsspec.open(url, "rt") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def ranked(rows: list[dict]) -> list[dict]:
    """Best (lowest distance) first; rows without a score (test split, no solution) last."""
    return sorted(rows, key=lambda r: (r["distance"] == "", float(r["distance"] or 0), r["time"]))

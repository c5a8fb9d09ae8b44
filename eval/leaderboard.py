"""A leaderboard CSV that many evaluation jobs append to at once, locally or on S3.

Every append rewrites the whole file in one atomic step, so a reader never sees a torn file,
and is serialised so that no row is lost: locally under an exclusive ``flock`` on a lock file
beside the CSV; on S3 by optimistic concurrency, a conditional PUT (``If-Match`` the ETag that
was read, or ``If-None-Match: *`` for a new file) retried with backoff when another job won.

Cells are user input (run names, paths) and the file is opened in spreadsheets: a cell that a
spreadsheet would evaluate (starting with ``= + - @``, tab or CR) is stored behind a ``'``, as
OWASP recommends for CSV injection, and :func:`read` gives the original value back. A file
written with fewer columns (an older version) is rewritten with today's on the next append.
"""

import csv
import errno
import fcntl
import io
import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

import fsspec
import fsspec.asyn

from shards.errors import UserError
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
    "rejected",  # utterances the pipeline rejected: in the submission with an empty prediction
    "lm",  # the beam search's phoneme n-gram (empty: none), its weight and the per-phoneme bonus
    "alpha",
    "beta",
    "weights",  # the model's live or averaged weights (train/average.py); empty in older rows: live
    "public_distance",  # with a solution file: Kaggle's public board (shards.kaggle.public_rows) ...
    "private_distance",  # ... and its private rest; empty without one
    "combine",  # an ensemble's (eval/ensemble.py COMBINE); empty for one checkpoint
    "parameters",  # the model's, all an ensemble's members together; empty in older rows
]
FIRST_COLUMNS = ("time", "run", "checkpoint", "epoch", "split", "beam", "distance")  # every version's
ATTEMPTS = 200
MEMBERS = " + "  # joins an ensemble's members in the run, checkpoint, epoch, step and weights cells


def joined(values: Iterable[object]) -> object:
    """One cell for an ensemble's members; a single checkpoint's value as it is."""
    values = list(values)
    return values[0] if len(values) == 1 else MEMBERS.join(map(str, values))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _neutralised(value: object) -> str:
    text = str(value)
    if text[:1] in FORMULA_STARTS or (text[:1] == "'" and text.lstrip("'")[:1] in FORMULA_STARTS):
        return "'" + text
    return text


def _original(text: str) -> str:
    return text[1:] if text[:1] == "'" and text.lstrip("'")[:1] in FORMULA_STARTS else text


class NotALeaderboard(UserError):
    """The file at a leaderboard's URL is something else: it is neither read as one nor rewritten."""


def _parse(data: bytes, where: str) -> list[dict]:
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        missing = [c for c in FIRST_COLUMNS if c not in (reader.fieldnames or FIRST_COLUMNS)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise NotALeaderboard(f"{where}: not a leaderboard CSV ({error})") from None
    if missing:
        raise NotALeaderboard(
            f"{where}: not a leaderboard CSV (no {', '.join(missing)} column); refusing to read or rewrite it"
        )
    return [{key: _original(value or "") for key, value in row.items() if key is not None} for row in reader]


def _with_row(existing: bytes, row: dict, where: str) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\r\n")  # RFC 4180; also quotes cells holding a CR
    writer.writeheader()
    for old in [*_parse(existing, where), row]:
        writer.writerow({column: _neutralised(old.get(column, "")) for column in COLUMNS})
    return text.getvalue().encode()


def _open_lock(path: Path) -> int:
    """The lock file's descriptor: created if missing, never truncated, never through a symlink."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(f"{path}: the leaderboard's lock file is a symbolic link; refusing it") from error
        raise


def _append_local(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _open_lock(path.with_name(path.name + ".lock"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = path.read_bytes() if path.exists() else b""
        Store(str(path.parent)).publish_bytes(_with_row(existing, row, str(path)), path.name)
    finally:
        os.close(lock)


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
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=_with_row(existing, row, url), **condition)
            return
        except OSError as error:  # s3fs turns 412 Precondition Failed into an OSError
            if "pre-condition" not in str(error).lower() and "precondition" not in str(error).lower():
                raise
            time.sleep(random.uniform(0, 0.05 * min(attempt + 1, 10)))
    raise UserError(f"{url}: gave up appending after {ATTEMPTS} conflicting writers")


def append(url: str, row: dict) -> None:
    """Add one row (a dict with COLUMNS keys) to the leaderboard at ``url``."""
    if url.startswith("s3://"):
        _append_s3(url, row)
    else:
        _append_local(Path(url.removeprefix("file://")), row)


def read(url: str) -> list[dict]:
    """Every row, each with every column of COLUMNS (empty where an older file lacks it)."""
    try:
        with fsspec.open(url, "rb") as handle:
            rows = _parse(handle.read(), url)
    except FileNotFoundError:
        return []
    return [{column: row.get(column, "") for column in COLUMNS} for row in rows]


def standing(row: dict) -> float:
    """What a row ranks by: its public-board distance where it has one (Kaggle ranks a running
    competition by the public board alone), else its distance; unscored rows last."""
    value = row.get("public_distance") or row["distance"]
    return float(value) if value else float("inf")


def ranked(rows: list[dict]) -> list[dict]:
    """Best (lowest :func:`standing`) first; rows without a score (test split, no solution) last."""
    return sorted(rows, key=lambda r: (standing(r), r["time"]))

"""What a split holds, readable without opening a shard.

``<split>/manifest.parquet``: one row per utterance, in shard order (length-sorted):
key, id, shard, n_frames, n_phonemes and ctc_frames (the fewest output frames CTC needs for the
labels: one per phoneme and a blank between equal neighbours), both null where the split has no
transcripts (and ctc_frames absent in datasets written before it), and source: the source folder
the utterance was read from (train-clean-100, train-clean-360, dev-clean, ...; absent in datasets
written before it).

``<split>/index.json``: per shard its name, utterances, frames, phonemes, bytes, sha256
and frame range, plus totals. It is published last, so its presence means the split is
complete; its ``fingerprint`` identifies the inputs and settings that produced it.

``<split>/test_order.csv`` (header ``id``) and ``rejects.csv`` (``split,id,file,reason``) are
CSV, quoted where an id needs it; this module is their one writer and one reader.
"""

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from shards.errors import MissingInput, UserError


class DatasetError(UserError, ValueError):
    """A dataset file that is malformed, inconsistent or hostile; the message names it."""


INDEX = "index.json"
MANIFEST = "manifest.parquet"
STATS = "stats.json"
REJECTS = "rejects.csv"
ORDER = "test_order.csv"  # submission order of an unlabelled split, every source id (rejected ones too)

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.string()),
        ("shard", pa.string()),
        ("n_frames", pa.int32()),
        ("n_phonemes", pa.int32()),
        ("ctc_frames", pa.int32()),
        ("source", pa.string()),
    ]
)


SHARD_NAME = re.compile(r"shard-[0-9]{6}\.tar")  # the only names a reader opens: never a path


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


@dataclass(frozen=True)
class ShardEntry:
    name: str
    utterances: int
    frames: int
    phonemes: int
    bytes: int
    sha256: str
    min_frames: int
    max_frames: int


@dataclass(frozen=True)
class SplitIndex:
    split: str
    labelled: bool
    feature_dim: int
    fingerprint: str
    shards: list[ShardEntry] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {
            "shards": len(self.shards),
            "utterances": sum(s.utterances for s in self.shards),
            "frames": sum(s.frames for s in self.shards),
            "phonemes": sum(s.phonemes for s in self.shards),
            "bytes": sum(s.bytes for s in self.shards),
        }

    def to_json(self) -> bytes:
        document = asdict(self) | {"totals": self.totals()}
        return (json.dumps(document, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "SplitIndex":
        try:
            document = json.loads(data)
            document.pop("totals", None)
            shards = [ShardEntry(**entry) for entry in document.pop("shards")]
            index = cls(**document, shards=shards)
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f"{where}: not a split index ({error})") from error
        for entry in index.shards:
            if not isinstance(entry.name, str) or not SHARD_NAME.fullmatch(entry.name):
                raise DatasetError(f"{where}: shard name {entry.name!r} is not of the form shard-NNNNNN.tar")
        return index


def manifest_bytes(rows: list[dict]) -> bytes:
    """Parquet bytes of manifest rows (dicts with the MANIFEST_SCHEMA fields)."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_manifest(data: bytes) -> pa.Table:
    """The manifest table of Parquet bytes, read from a copy that Arrow owns. Handed a Python object
    (a BytesIO, or bytes it wraps), Arrow's I/O threads may drop their last reference to it after
    this returns; a thread that needs the GIL while the interpreter finalises aborts the process
    ("terminate called without an active exception"): seen in training ranks and ``shards plan``."""
    copy = pa.BufferOutputStream()
    copy.write(data)
    return pq.read_table(pa.BufferReader(copy.getvalue()))


def read_split_metadata(url: str, split: str) -> tuple[SplitIndex, list[dict]]:
    """The split's index and manifest rows (shard order), at any fsspec URL; a missing index means
    an incomplete split."""
    where = f"{url.rstrip('/')}/{split}"
    try:
        with fsspec.open(f"{where}/{INDEX}", "rb") as handle:
            index = SplitIndex.from_json(handle.read(), f"{where}/{INDEX}")
        with fsspec.open(f"{where}/{MANIFEST}", "rb") as handle:
            rows = read_manifest(handle.read()).to_pylist()
    except FileNotFoundError as error:
        raise MissingInput(f"{where}: not a complete split ({error})") from error
    return index, rows


@dataclass(frozen=True)
class Rejection:
    """An input utterance that is in no shard, and why."""

    split: str
    id: str
    file: str  # relative to the source root
    reason: str


def _csv_bytes(header: list[str], rows) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8", "backslashreplace")  # a non-UTF-8 file name stays visible


def _csv_rows(data: bytes, header: list[str], where: str) -> list[list[str]]:
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{where}: not a CSV file ({error})") from error
    if not rows or rows[0] != header:
        raise DatasetError(f"{where}: expected the header {','.join(header)}")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{where}: line {number} has {len(row)} fields, expected {len(header)}")
    return rows[1:]


def order_bytes(ids: list[str]) -> bytes:
    return _csv_bytes(["id"], ([i] for i in ids))


def read_order(data: bytes, where: str) -> list[str]:
    """The ids of a split's ``test_order.csv``, in submission order."""
    return [row[0] for row in _csv_rows(data, ["id"], where)]


REJECT_COLUMNS = ["split", "id", "file", "reason"]


def rejects_bytes(rejections: list[Rejection]) -> bytes:
    ordered = sorted(rejections, key=lambda r: (r.split, r.id))
    return _csv_bytes(REJECT_COLUMNS, ([r.split, r.id, r.file, r.reason] for r in ordered))


def read_rejects(data: bytes, where: str) -> list[Rejection]:
    return [Rejection(*row) for row in _csv_rows(data, REJECT_COLUMNS, where)]

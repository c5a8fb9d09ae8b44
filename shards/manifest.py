"""What a split holds, readable without opening a shard.

``<split>/manifest.parquet``: one row per utterance, in shard order (length-sorted):
key, id, shard, n_frames, n_phonemes (null where the split has no transcripts).

``<split>/index.json``: per shard its name, utterances, frames, phonemes, bytes, sha256
and frame range, plus totals. It is published last, so its presence means the split is
complete; its ``fingerprint`` identifies the inputs and settings that produced it.
"""

import io
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

INDEX = "index.json"
MANIFEST = "manifest.parquet"
STATS = "stats.json"
REJECTS = "rejects.csv"
ORDER = "test_order.csv"  # submission order of an unlabelled split: a header, then one id per line

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("id", pa.string()),
        ("shard", pa.string()),
        ("n_frames", pa.int32()),
        ("n_phonemes", pa.int32()),
    ]
)


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
            return cls(**document, shards=shards)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{where}: not a split index ({error})") from error


def manifest_bytes(rows: list[dict]) -> bytes:
    """Parquet bytes of manifest rows (dicts with the MANIFEST_SCHEMA fields)."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_manifest(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))

"""Phase 3 of the pipeline: each split sorted by length, cut into shards of about ``--shard-mb``,
each shard written by a task (re-reading and normalising its utterances), then, on the driver,
``manifest.parquet``, then ``index.json`` last.

Resuming: a shard is published atomically and then marked done in ``<split>/.parts/`` with a
fingerprint of exactly what it holds (inputs' digests, statistics, keys); a rerun skips every
shard whose mark matches. All outputs are deterministic, so a resumed run is byte-identical to a
clean one.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.layout import SourceSplit
from pipeline.runner import TaskRunner, worker_state
from pipeline.scan import SCAN_CHUNK, Scanned
from pipeline.source import InputChanged, SourceReader, open_source_and_store
from pipeline.validate import Rejected
from shards import manifest
from shards.manifest import ShardEntry, SplitIndex
from shards.progress import Progress
from shards.sample import Utterance, sample_key
from shards.stats import FeatureStats
from shards.store import Store
from shards.writer import write_shard

log = logging.getLogger("pipeline")

FORMAT_VERSION = 1  # bump when the sample encoding changes, so old shards are not reused
MANIFEST_VERSION = 3  # bump when the manifest's columns change: a rerun rewrites it, reusing the shards
PARTS = ".parts"


@dataclass(frozen=True)
class ShardTask:
    split: str
    name: str
    fingerprint: str
    stats_json: bytes
    items: list[tuple[str, Scanned]]  # (sample key, utterance) in length order


def _tar_member_bytes(size: int) -> int:
    return 512 + -(-size // 512) * 512


def estimated_sample_bytes(scanned: Scanned) -> int:
    """Size of a sample in the tar: three members, each a header plus padded content."""
    features = _tar_member_bytes(128 + scanned.n_frames * scanned.dim * 4)
    labels = _tar_member_bytes(128 + 2 * (scanned.n_phonemes or 0))
    return features + labels + _tar_member_bytes(len(scanned.source.id.encode()))


def plan_shards(kept: list[Scanned], shard_bytes: float) -> list[list[Scanned]]:
    """Length-sorted utterances (ties by id) cut into consecutive runs of about ``shard_bytes``."""
    ordered = sorted(kept, key=lambda s: (s.n_frames, s.source.id))
    shards: list[list[Scanned]] = []
    size = 0.0
    for scanned in ordered:
        sample = estimated_sample_bytes(scanned)
        if not shards or (size + sample > shard_bytes and shards[-1]):
            shards.append([])
            size = 0.0
        shards[-1].append(scanned)
        size += sample
    return shards


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _shard_tasks(split: str, kept: list[Scanned], stats_json: bytes, shard_bytes: float) -> list[ShardTask]:
    stats_digest = hashlib.sha256(stats_json).hexdigest()
    tasks, position = [], 0
    for number, members in enumerate(plan_shards(kept, shard_bytes)):
        items = [(sample_key(position + i), scanned) for i, scanned in enumerate(members)]
        position += len(members)
        name = manifest.shard_name(number)
        contents = [(key, s.source.id, s.digest) for key, s in items]
        fingerprint = _fingerprint(FORMAT_VERSION, split, name, stats_digest, contents)
        tasks.append(ShardTask(split, name, fingerprint, stats_json, items))
    return tasks


def write_split(
    runner: TaskRunner,
    store: Store,
    split: SourceSplit,
    kept: list[Scanned],
    stats_json: bytes,
    shard_mb: float,
    dim: int,
) -> SplitIndex:
    """The split's shards, order file, manifest and, last, index; a split already up to date is kept."""
    tasks = _shard_tasks(split.name, kept, stats_json, shard_mb * 1e6)
    fingerprint = _fingerprint(
        FORMAT_VERSION, MANIFEST_VERSION, split.name, split.labelled, dim, [t.fingerprint for t in tasks]
    )
    index_path = f"{split.name}/{manifest.INDEX}"
    if store.exists(index_path):
        existing = SplitIndex.from_json(store.read_bytes(index_path), store.path(index_path))
        if existing.fingerprint == fingerprint:
            log.info("%s: up to date (%d shards)", split.name, len(existing.shards))
            store.remove(f"{split.name}/{PARTS}")  # a run killed just after publishing the index left them
            return existing
        store.remove(index_path)  # the split is about to change: it is no longer complete
    entries = _write_shards(runner, tasks, split.name, len(kept))
    _remove_stale_shards(store, split.name, {t.name for t in tasks})
    if split.order is not None:
        store.publish_bytes(manifest.order_bytes(split.order), f"{split.name}/{manifest.ORDER}")
    rows = [
        {
            "key": key,
            "id": s.source.id,
            "shard": t.name,
            "n_frames": s.n_frames,
            "n_phonemes": s.n_phonemes,
            "ctc_frames": s.ctc_frames,
            "source": s.source.folder,
        }
        for t in tasks
        for key, s in t.items
    ]
    store.publish_bytes(manifest.manifest_bytes(rows), f"{split.name}/{manifest.MANIFEST}")
    index = SplitIndex(split.name, split.labelled, dim, fingerprint, entries)
    store.publish_bytes(index.to_json(), index_path)
    store.remove(f"{split.name}/{PARTS}")
    return index


def _write_shards(
    runner: TaskRunner, tasks: list[ShardTask], split: str, utterances: int
) -> list[ShardEntry]:
    entries = []
    with Progress(utterances, f"write {split}", "utt", log=log) as bar:
        for task, entry in zip(tasks, runner.map(_write_shard, tasks), strict=True):
            entries.append(entry)
            bar.update(len(task.items))
    return entries


def _remove_stale_shards(store: Store, split: str, planned: set[str]) -> None:
    """Shards of an earlier run of the split that this run's plan does not have."""
    for stale in store.list(split):
        if stale.startswith("shard-") and stale not in planned:
            store.remove(f"{split}/{stale}")


# --- on a worker: a task gets the URLs and opens them itself ------------------------------


def _write_shard(src: str, dst: str, task: ShardTask) -> ShardEntry:
    source_reader, store = worker_state(src, dst, open_source_and_store)
    mark = f"{task.split}/{PARTS}/{task.name}.json"
    if store.exists(mark):
        done = json.loads(store.read_bytes(mark))
        if done["fingerprint"] == task.fingerprint:
            return ShardEntry(**done["entry"])
    staged = store.staging_file(task.name)
    written = write_shard(_normalised_utterances(source_reader, task), staged)
    store.publish(staged, f"{task.split}/{task.name}")
    frames = [scanned.n_frames for _, scanned in task.items]
    entry = ShardEntry(
        name=task.name,
        utterances=written.utterances,
        frames=written.frames,
        phonemes=written.phonemes,
        bytes=written.bytes,
        sha256=written.sha256,
        min_frames=min(frames),
        max_frames=max(frames),
    )
    store.publish_bytes(json.dumps({"fingerprint": task.fingerprint, "entry": asdict(entry)}).encode(), mark)
    return entry


def _normalised_utterances(source_reader: SourceReader, task: ShardTask) -> Iterator[tuple[str, Utterance]]:
    stats = FeatureStats.from_json(task.stats_json, "statistics")
    for start in range(0, len(task.items), SCAN_CHUNK):
        chunk = task.items[start : start + SCAN_CHUNK]
        checked_again = source_reader.checked([s.source for _, s in chunk], again=True)
        for (key, scanned), (_, checked) in zip(chunk, checked_again, strict=True):
            if isinstance(checked, Rejected) or checked.digest != scanned.digest:
                raise InputChanged(f"{scanned.source.features}: input changed while the pipeline ran")
            labels = None if checked.labels is None else np.asarray(checked.labels, dtype=np.int16)
            yield key, Utterance(scanned.source.id, stats.normalise(checked.features), labels)

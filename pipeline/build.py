"""The shard pipeline: HW3P2 folder in, normalised length-sorted shards out.

1. Scan: read and check every utterance of every split (in tasks of up to a few thousand
   utterances, run where pipeline/runner.py places them: this process, local worker processes or a
   Dask cluster), collecting lengths, a digest of the raw bytes, and per-utterance statistics.
   Refused utterances go to ``rejects.csv`` with file and reason.
2. Statistics: merge the training split's partial statistics in id order and publish
   ``stats.json``. With ``--stats`` those are applied instead, after two checks that refuse
   (exit 2, nothing written) data of another front end: the source's ``frontend.json`` against
   the one beside the statistics, when both have one, and each split's own statistics against
   them (shards/stats.py, ``FeatureShift``); ``--accept-shift`` overrides both. The source's
   ``frontend.json`` is carried into the dataset (none: the front end is unknown).
3. Per split: sort by frame count, cut into shards of about ``--shard-mb``, write each
   shard (one task each, re-reading and normalising its utterances), then, on the driver,
   ``manifest.parquet``, then ``index.json`` last.

Resuming: a shard is published atomically and then marked done in ``<split>/.parts/``
with a fingerprint of exactly what it holds (inputs' digests, statistics, keys). A rerun
redoes the scan, skips every shard whose mark matches, and writes the rest. All outputs
are deterministic, so a resumed run is byte-identical to a clean one.
"""

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import fsspec
import numpy as np

from pipeline.layout import SourceSplit, SourceUtterance, discover
from pipeline.runner import TaskRunner, worker_state
from pipeline.source import SourceReader
from pipeline.validate import Rejected
from shards import manifest, s3
from shards.frontend import FILE as FRONT_END_FILE
from shards.frontend import FrontEnd, describe, publish_front_end, read_front_end
from shards.manifest import Rejection, ShardEntry, SplitIndex
from shards.progress import Progress
from shards.sample import Utterance, sample_key
from shards.stats import FeatureStats, read_stats
from shards.store import Store
from shards.writer import write_shard

log = logging.getLogger("pipeline")

FORMAT_VERSION = 1  # bump when the sample encoding changes, so old shards are not reused
SCAN_CHUNK = 64  # utterances fetched together (concurrently, on object storage)
SCAN_TASK = (256, 4096)  # fewest and most utterances a scan task checks
SCAN_TASKS_PER_WORKER = 8  # enough tasks that a slow worker does not hold the others up
PARTS = ".parts"


class PipelineError(RuntimeError):
    """A condition that stops the run, named precisely."""


class FeatureShiftError(PipelineError):
    """Data whose front end is not the one the applied statistics (--stats) come from."""


class TooManyRejects(PipelineError):
    pass


@dataclass(frozen=True)
class Settings:
    src: str  # fsspec URL of the HW3P2 folder
    dst: str  # fsspec URL the dataset is written to
    workers: int = 1  # local processes for reading and writing
    shard_mb: float = 64.0  # target shard size
    stats: str | None = None  # URL of an existing stats.json to apply instead of computing one
    max_reject_fraction: float = 0.05  # more rejected than this in any split fails the run
    accept_shift: bool = False  # use data whose features do not match --stats anyway
    scheduler: str | None = None  # a Dask scheduler's address (tcp://HOST:PORT): the tasks run on its cluster
    scheduler_file: str | None = None  # or the file `dask scheduler --scheduler-file` wrote


@dataclass(frozen=True)
class Scanned:
    source: SourceUtterance
    n_frames: int
    dim: int
    n_phonemes: int | None
    digest: str
    stats: FeatureStats  # the training split's make stats.json; every split's are checked against --stats


@dataclass(frozen=True)
class SplitSummary:
    split: str
    kept: int
    rejected: int

    @property
    def rejected_fraction(self) -> float:
        return self.rejected / max(self.kept + self.rejected, 1)

    def line(self) -> str:
        return f"{self.split}: kept {self.kept}, rejected {self.rejected} ({self.rejected_fraction:.1%})"


@dataclass(frozen=True)
class BuildSummary:
    splits: list[SplitSummary]
    throttled: int  # 503 SlowDown answers from the object store, all retried

    def line(self) -> str:
        busy = f" | the store answered 503 SlowDown {self.throttled} times, retried" if self.throttled else ""
        return " | ".join(s.line() for s in self.splits) + busy


@dataclass(frozen=True)
class ShardTask:
    split: str
    name: str
    fingerprint: str
    stats_json: bytes
    items: list[tuple[str, Scanned]]  # (sample key, utterance) in length order


# --- worker side: tasks get the URLs and open them themselves ----------------------------


def _open(src: str, dst: str) -> tuple[SourceReader, Store]:
    for url in (src, dst):  # this worker's credentials and network, which may not be the driver's
        s3.count_throttling(url)
        s3.check_access(url)
    store = Store(dst)
    return SourceReader(src, store.staging_folder("source-copy")), store


def _scan_task(src: str, dst: str, utterances: list[SourceUtterance]) -> list[Scanned | Rejection]:
    source_reader, _ = worker_state(src, dst, _open)
    results: list[Scanned | Rejection] = []
    for start in range(0, len(utterances), SCAN_CHUNK):
        results += _scan_chunk(source_reader, utterances[start : start + SCAN_CHUNK])
    return results


def _scan_chunk(source_reader: SourceReader, utterances: list[SourceUtterance]) -> list[Scanned | Rejection]:
    results: list[Scanned | Rejection] = []
    for source, checked in source_reader.checked(utterances):
        if isinstance(checked, Rejected):
            results.append(Rejection(source.split, source.id, checked.file, checked.reason))
            continue
        features = checked.features
        results.append(
            Scanned(
                source=source,
                n_frames=len(features),
                dim=features.shape[1],
                n_phonemes=None if checked.labels is None else len(checked.labels),
                digest=checked.digest,
                stats=FeatureStats.of(features),
            )
        )
    return results


def _normalised_utterances(source_reader: SourceReader, task: ShardTask) -> Iterator[tuple[str, Utterance]]:
    stats = FeatureStats.from_json(task.stats_json, "statistics")
    for start in range(0, len(task.items), SCAN_CHUNK):
        chunk = task.items[start : start + SCAN_CHUNK]
        checked_again = source_reader.checked([s.source for _, s in chunk], again=True)
        for (key, scanned), (_, checked) in zip(chunk, checked_again, strict=True):
            if isinstance(checked, Rejected) or checked.digest != scanned.digest:
                raise PipelineError(f"{scanned.source.features}: input changed while the pipeline ran")
            labels = None if checked.labels is None else np.asarray(checked.labels, dtype=np.int16)
            yield key, Utterance(scanned.source.id, stats.normalise(checked.features), labels)


def _write_shard(src: str, dst: str, task: ShardTask) -> ShardEntry:
    source_reader, store = worker_state(src, dst, _open)
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


# --- planning ----------------------------------------------------------------------------


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


# --- driver ------------------------------------------------------------------------------


def scan_task_size(utterances: int, workers: int) -> int:
    """Utterances per scan task: about SCAN_TASKS_PER_WORKER tasks per worker, within SCAN_TASK,
    a whole number of SCAN_CHUNKs (one task per utterance would cost the scheduler more than the work)."""
    fewest, most = SCAN_TASK
    size = min(max(math.ceil(utterances / (SCAN_TASKS_PER_WORKER * workers)), fewest), most)
    return math.ceil(size / SCAN_CHUNK) * SCAN_CHUNK


def _scan(runner: TaskRunner, split: SourceSplit) -> tuple[list[Scanned], list[Rejection]]:
    size = scan_task_size(len(split.utterances), runner.workers)
    jobs = [split.utterances[i : i + size] for i in range(0, len(split.utterances), size)]
    kept: list[Scanned] = []
    rejected: list[Rejection] = []
    with Progress(len(split.utterances), f"scan {split.name}", "utt", log=log) as bar:
        for results in runner.map(_scan_task, jobs):
            for result in results:
                (rejected if isinstance(result, Rejection) else kept).append(result)
            bar.update(len(results))
    return kept, rejected


def _common_dim(scanned: list[Scanned]) -> int:
    """The feature dimension most utterances have (ties to the smaller)."""
    counts = Counter(s.dim for s in scanned)
    return max(counts, key=lambda dim: (counts[dim], -dim))


def _write_split(
    runner: TaskRunner,
    store: Store,
    split: SourceSplit,
    kept: list[Scanned],
    stats_json: bytes,
    shard_mb: float,
    dim: int,
) -> SplitIndex:
    tasks = _shard_tasks(split.name, kept, stats_json, shard_mb * 1e6)
    fingerprint = _fingerprint(
        FORMAT_VERSION, split.name, split.labelled, dim, [t.fingerprint for t in tasks]
    )
    index_path = f"{split.name}/{manifest.INDEX}"
    if store.exists(index_path):
        existing = SplitIndex.from_json(store.read_bytes(index_path), store.path(index_path))
        if existing.fingerprint == fingerprint:
            log.info("%s: up to date (%d shards)", split.name, len(existing.shards))
            store.remove(f"{split.name}/{PARTS}")  # a run killed just after publishing the index left them
            return existing
        store.remove(index_path)  # the split is about to change: it is no longer complete
    entries = []
    with Progress(len(kept), f"write {split.name}", "utt", log=log) as bar:
        for task, entry in zip(tasks, runner.map(_write_shard, tasks), strict=True):
            entries.append(entry)
            bar.update(len(task.items))
    planned = {t.name for t in tasks}
    for stale in store.list(split.name):
        if stale.startswith("shard-") and stale not in planned:
            store.remove(f"{split.name}/{stale}")
    if split.order is not None:
        store.publish_bytes(manifest.order_bytes(split.order), f"{split.name}/{manifest.ORDER}")
    rows = [
        {"key": key, "id": s.source.id, "shard": t.name, "n_frames": s.n_frames, "n_phonemes": s.n_phonemes}
        for t in tasks
        for key, s in t.items
    ]
    store.publish_bytes(manifest.manifest_bytes(rows), f"{split.name}/{manifest.MANIFEST}")
    index = SplitIndex(split.name, split.labelled, dim, fingerprint, entries)
    store.publish_bytes(index.to_json(), index_path)
    store.remove(f"{split.name}/{PARTS}")
    return index


def build(settings: Settings) -> BuildSummary:
    """Run the whole pipeline; returns per-split kept/rejected counts, and how busy the store was."""
    given = read_stats(settings.stats) if settings.stats else None
    throttled_before = s3.throttled()
    for url in (settings.src, settings.dst):  # credentials, bucket, endpoint: fail now, not after the scan
        s3.count_throttling(url)
        s3.check_access(url)
    front_end = read_front_end(settings.src)
    log.info("front end of %s: %s", settings.src, describe(front_end))
    if given is not None:
        _check_front_ends(settings, front_end)
    store = Store(settings.dst)
    store.clear_staging()
    source_fs, source_root = fsspec.core.url_to_fs(settings.src)
    splits = discover(source_fs, source_root)
    log.info("found splits %s under %s", ", ".join(s.name for s in splits), settings.src)
    runner = TaskRunner(
        settings.src, settings.dst, settings.workers, settings.scheduler, settings.scheduler_file
    )
    try:
        scanned = {split.name: _scan(runner, split) for split in splits}
        all_kept = [s for kept, _ in scanned.values() for s in kept]
        if not all_kept:
            raise PipelineError(f"{settings.src}: no usable utterance in any split")
        dim = given.dim if given else _common_dim(all_kept)
        kept_by_split: dict[str, list[Scanned]] = {}
        rejections: list[Rejection] = []
        for name, (kept, rejected) in scanned.items():
            rejections += rejected
            rejections += [
                Rejection(
                    name,
                    s.source.id,
                    s.source.features,
                    f"{s.dim} coefficients per frame, the data has {dim}",
                )
                for s in kept
                if s.dim != dim
            ]
            kept_by_split[name] = [s for s in kept if s.dim == dim]
        if given is not None:
            _check_shift(settings, given, kept_by_split)  # before anything is written
        rejections = [replace(r, file=r.file.removeprefix(source_root).lstrip("/")) for r in rejections]
        store.publish_bytes(manifest.rejects_bytes(rejections), manifest.REJECTS)
        summaries = [
            SplitSummary(s.name, len(kept_by_split[s.name]), sum(r.split == s.name for r in rejections))
            for s in splits
        ]
        too_many = [s for s in summaries if s.rejected_fraction > settings.max_reject_fraction]
        if too_many:
            raise TooManyRejects(
                "; ".join(s.line() for s in too_many)
                + f" — over the {settings.max_reject_fraction:.0%} limit; see {store.path(manifest.REJECTS)}"
            )
        stats = given or _training_stats(kept_by_split, dim, settings.src)
        stats_json = stats.to_json()
        store.publish_bytes(stats_json, manifest.STATS)
        if front_end is not None:
            publish_front_end(store, front_end)
        else:  # unknown: a rerun from another source must not leave the old record
            store.remove(FRONT_END_FILE)
        for split in splits:
            _write_split(runner, store, split, kept_by_split[split.name], stats_json, settings.shard_mb, dim)
    finally:
        runner.close()
    store.clear_staging()
    return BuildSummary(summaries, s3.throttled() - throttled_before + runner.throttled_elsewhere)


def _check_front_ends(settings: Settings, front_end: FrontEnd | None) -> None:
    """The source's recorded front end against the one the statistics' dataset records, when both do."""
    stats_root = settings.stats.rstrip("/").rpartition("/")[0] or "."
    applied = read_front_end(stats_root)
    if front_end is None or applied is None or settings.accept_shift:
        return
    differences = applied.differences(front_end)
    if differences:
        raise FeatureShiftError(
            f"{settings.src}/{FRONT_END_FILE}: another front end than {stats_root}/{FRONT_END_FILE} records, "
            f"whose statistics --stats applies ({'; '.join(differences)}); pass --accept-shift to use it anyway"
        )


def _check_shift(settings: Settings, given: FeatureStats, kept_by_split: dict[str, list[Scanned]]) -> None:
    """Each split's own statistics against the applied ones: a shift beyond the rule is refused."""
    for name, kept in kept_by_split.items():
        if not kept:
            continue
        ordered = sorted(kept, key=lambda s: s.source.id)
        observed = FeatureStats.pooled((scanned.stats for scanned in ordered), given.dim)
        shift = observed.shift_from(given, len(kept))
        if shift.is_shift and settings.accept_shift:
            log.warning(
                "%s/%s: features shifted from %s, accepted (--accept-shift): %s",
                settings.src,
                name,
                settings.stats,
                shift.describe(),
            )
        elif shift.is_shift:
            raise FeatureShiftError(
                f"{settings.src}/{name}: features do not match the statistics applied ({settings.stats}): "
                f"{shift.describe()} — another front end, or features normalised already? "
                "pass --accept-shift to use them anyway"
            )


def _training_stats(kept_by_split: dict[str, list[Scanned]], dim: int, src: str) -> FeatureStats:
    train = kept_by_split.get("train")
    if not train:
        raise PipelineError(f"{src}: no usable training split to compute statistics from; pass --stats")
    return FeatureStats.pooled((s.stats for s in sorted(train, key=lambda s: s.source.id)), dim)

"""The shard pipeline: HW3P2 folder in, normalised length-sorted shards out. ``build`` runs:

1. Scan (``pipeline/scan.py``): read and check every utterance of every split, in tasks run where
   pipeline/runner.py places them (this process, local worker processes or a Dask cluster).
   Refused utterances, and those whose feature dimension is not the data's, go to
   ``rejects.csv`` with file and reason; too many in a split stop the run.
2. Statistics: merge the training split's partial statistics in id order and publish
   ``stats.json``. With ``--stats`` those are applied instead, after two checks that refuse
   (exit 2, nothing written) data of another front end: the source's ``frontend.json`` against
   the one beside the statistics, when both have one, and each split's own statistics against
   them (shards/stats.py, ``FeatureShift``); ``--accept-shift`` overrides both. The source's
   ``frontend.json`` is carried into the dataset (none: the front end is unknown).
3. Write (``pipeline/write.py``): per split, length-sorted shards, the manifest, the index last;
   a rerun skips the shards already written, byte-identical to a clean run.
"""

import logging
from collections import Counter
from dataclasses import dataclass, replace

import fsspec

from pipeline.layout import SourceSplit, discover
from pipeline.runner import TaskRunner
from pipeline.scan import Scanned, SplitScan, scan_split
from pipeline.source import check_source_and_destination
from pipeline.write import write_split
from shards import manifest, s3
from shards.errors import UserError
from shards.frontend import FILE as FRONT_END_FILE
from shards.frontend import FrontEnd, describe, publish_front_end, read_front_end
from shards.manifest import Rejection
from shards.stats import FeatureStats, read_stats
from shards.store import Store

log = logging.getLogger("pipeline")


class PipelineError(UserError):
    """A condition of the data or the settings that stops the run, named precisely."""


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


def build(settings: Settings) -> BuildSummary:
    """Run the whole pipeline; returns per-split kept/rejected counts, and how busy the store was."""
    given = read_stats(settings.stats) if settings.stats else None
    throttled_before = s3.throttled()
    check_source_and_destination(settings.src, settings.dst)  # fail now, not after the scan
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
        scans = {split.name: scan_split(runner, split) for split in splits}
        if not any(scan.kept for scan in scans.values()):
            raise PipelineError(f"{settings.src}: no usable utterance in any split")
        dim = given.dim if given else _common_dim(scans)
        kept, rejections = _of_dimension(scans, dim)
        if given is not None:
            _check_shift(settings, given, kept)  # before anything is written
        summaries = _publish_rejects(store, settings, splits, kept, rejections, source_root)
        stats_json = _publish_statistics(store, given or _training_stats(kept, dim, settings.src), front_end)
        for split in splits:
            write_split(runner, store, split, kept[split.name], stats_json, settings.shard_mb, dim)
    finally:
        runner.close()
    store.clear_staging()
    return BuildSummary(summaries, s3.throttled() - throttled_before + runner.throttled_elsewhere)


def _common_dim(scans: dict[str, SplitScan]) -> int:
    """The feature dimension most kept utterances have (ties to the smaller)."""
    counts = Counter(s.dim for scan in scans.values() for s in scan.kept)
    return max(counts, key=lambda dim: (counts[dim], -dim))


def _of_dimension(scans: dict[str, SplitScan], dim: int) -> tuple[dict[str, list[Scanned]], list[Rejection]]:
    """Each split's utterances of ``dim`` coefficients, and every rejection: the scan's, then each
    utterance of another dimension."""
    kept: dict[str, list[Scanned]] = {}
    rejections: list[Rejection] = []
    for name, scan in scans.items():
        kept[name] = [s for s in scan.kept if s.dim == dim]
        rejections += scan.rejected
        rejections += [
            Rejection(
                name, s.source.id, s.source.features, f"{s.dim} coefficients per frame, the data has {dim}"
            )
            for s in scan.kept
            if s.dim != dim
        ]
    return kept, rejections


def _publish_rejects(
    store: Store,
    settings: Settings,
    splits: list[SourceSplit],
    kept: dict[str, list[Scanned]],
    rejections: list[Rejection],
    source_root: str,
) -> list[SplitSummary]:
    """``rejects.csv`` (files relative to the source), and each split's counts; a split over the
    reject limit stops the run."""
    rejections = [replace(r, file=r.file.removeprefix(source_root).lstrip("/")) for r in rejections]
    store.publish_bytes(manifest.rejects_bytes(rejections), manifest.REJECTS)
    summaries = [
        SplitSummary(s.name, len(kept[s.name]), sum(r.split == s.name for r in rejections)) for s in splits
    ]
    too_many = [s for s in summaries if s.rejected_fraction > settings.max_reject_fraction]
    if too_many:
        raise TooManyRejects(
            "; ".join(s.line() for s in too_many)
            + f" — over the {settings.max_reject_fraction:.0%} limit; see {store.path(manifest.REJECTS)}"
        )
    return summaries


def _publish_statistics(store: Store, stats: FeatureStats, front_end: FrontEnd | None) -> bytes:
    """``stats.json``, and the source's front end beside it; returns the statistics' bytes."""
    stats_json = stats.to_json()
    store.publish_bytes(stats_json, manifest.STATS)
    if front_end is not None:
        publish_front_end(store, front_end)
    else:  # unknown: a rerun from another source must not leave the old record
        store.remove(FRONT_END_FILE)
    return stats_json


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

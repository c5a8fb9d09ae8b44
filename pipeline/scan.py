"""Phase 1 of the pipeline: every utterance of a split read and checked, in tasks run where
``pipeline/runner.py`` places them. A kept utterance becomes a :class:`Scanned` (its lengths, a
digest of its raw bytes, its statistics); a refused one a :class:`Rejection` with file and reason."""

import logging
import math
from dataclasses import dataclass

from pipeline.layout import SourceSplit, SourceUtterance
from pipeline.runner import TaskRunner, worker_state
from pipeline.source import SourceReader, open_source_and_store
from pipeline.validate import Rejected, ctc_min_frames
from shards.manifest import Rejection
from shards.progress import Progress
from shards.stats import FeatureStats

log = logging.getLogger("pipeline")

SCAN_CHUNK = 64  # utterances fetched together (concurrently, on object storage)
SCAN_TASK = (256, 4096)  # fewest and most utterances a scan task checks
SCAN_TASKS_PER_WORKER = 8  # enough tasks that a slow worker does not hold the others up


@dataclass(frozen=True)
class Scanned:
    source: SourceUtterance
    n_frames: int
    dim: int
    n_phonemes: int | None
    ctc_frames: int | None  # fewest output frames CTC needs for the labels (validate.ctc_min_frames)
    digest: str
    stats: FeatureStats  # the training split's make stats.json; every split's are checked against --stats


@dataclass(frozen=True)
class SplitScan:
    kept: list[Scanned]
    rejected: list[Rejection]


def scan_task_size(utterances: int, workers: int) -> int:
    """Utterances per scan task: about SCAN_TASKS_PER_WORKER tasks per worker, within SCAN_TASK,
    a whole number of SCAN_CHUNKs (one task per utterance would cost the scheduler more than the work)."""
    fewest, most = SCAN_TASK
    size = min(max(math.ceil(utterances / (SCAN_TASKS_PER_WORKER * workers)), fewest), most)
    return math.ceil(size / SCAN_CHUNK) * SCAN_CHUNK


def scan_split(runner: TaskRunner, split: SourceSplit) -> SplitScan:
    """The split's utterances, each kept or rejected, with a progress bar."""
    size = scan_task_size(len(split.utterances), runner.workers)
    jobs = [split.utterances[i : i + size] for i in range(0, len(split.utterances), size)]
    scan = SplitScan([], [])
    with Progress(len(split.utterances), f"scan {split.name}", "utt", log=log) as bar:
        for results in runner.map(_scan_task, jobs):
            for result in results:
                (scan.rejected if isinstance(result, Rejection) else scan.kept).append(result)
            bar.update(len(results))
    return scan


# --- on a worker: a task gets the URLs and opens them itself ------------------------------


def _scan_task(src: str, dst: str, utterances: list[SourceUtterance]) -> list[Scanned | Rejection]:
    source_reader, _ = worker_state(src, dst, open_source_and_store)
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
                ctc_frames=None if checked.labels is None else ctc_min_frames(checked.labels),
                digest=checked.digest,
                stats=FeatureStats.of(features),
            )
        )
    return results

"""pipeline/scan.py: the pipeline's first phase, every utterance of a split read and checked, kept
with what the next phases need, or rejected with its file and reason."""

from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.layout import discover
from pipeline.runner import TaskRunner
from pipeline.scan import SCAN_CHUNK, SCAN_TASK, SCAN_TASKS_PER_WORKER, Scanned, scan_split, scan_task_size
from pipeline.synthetic import write_hw3p2
from shards.manifest import Rejection


@pytest.mark.parametrize("workers", [1, 2, 8, 64])
@pytest.mark.parametrize("utterances", [1, 100, 2_000, 28_539, 132_553, 10**7])
def test_a_scan_task_is_whole_chunks_within_its_bounds_about_eight_per_worker(utterances, workers):
    size = scan_task_size(utterances, workers)
    fewest, most = SCAN_TASK
    assert size % SCAN_CHUNK == 0 and fewest <= size <= most
    if fewest < size < most:  # not at a bound: the fewest whole chunks that give each worker at most
        # SCAN_TASKS_PER_WORKER tasks
        assert -(-utterances // size) <= SCAN_TASKS_PER_WORKER * workers
        assert -(-utterances // (size - SCAN_CHUNK)) > SCAN_TASKS_PER_WORKER * workers


@pytest.mark.parametrize(
    ("utterances", "workers", "size"),
    [(1, 1, 256), (2_000, 2, 256), (100_000, 8, 1_600), (102_432, 8, 1_664), (10**7, 8, 4_096)],
)
def test_scan_task_sizes_by_example(utterances, workers, size):
    """About 8 tasks per worker (100,000 / 64 = 1,562.5 → 1,600; 1,600.5 → 1,664), 256 at least, 4,096 at most."""
    assert scan_task_size(utterances, workers) == size


def test_a_split_of_several_tasks_is_scanned_whole_in_order(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(600, 2, 2), frames=(60, 80), seed=5)
    fs, root = fsspec.core.url_to_fs(str(raw))
    (train,) = [split for split in discover(fs, root) if split.name == "train"]
    assert scan_task_size(600, 1) == 256  # three tasks
    scan = scan_split(TaskRunner(str(raw), str(tmp_path / "dst")), train)
    assert not scan.rejected and [k.source for k in scan.kept] == train.utterances


def test_every_utterance_is_kept_with_its_figures_or_rejected_with_its_file(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(70, 4, 5), frames=(60, 200), seed=4)
    fs, root = fsspec.core.url_to_fs(str(raw))
    splits = {split.name: split for split in discover(fs, root)}
    train = splits["train"]
    damaged, unlabelled = train.utterances[3], train.utterances[10]
    Path(damaged.features).write_bytes(b"not a numpy file")
    Path(unlabelled.transcript).unlink()
    splits = {split.name: split for split in discover(fs, root)}  # the transcript is gone now
    runner = TaskRunner(str(raw), str(tmp_path / "dst"))

    scan = scan_split(runner, splits["train"])
    assert len(scan.kept) + len(scan.rejected) == 70  # nothing lost
    reasons = {r.id: r for r in scan.rejected}
    assert set(reasons) == {damaged.id, unlabelled.id}
    assert all(isinstance(r, Rejection) and r.split == "train" for r in scan.rejected)
    assert reasons[damaged.id].file.endswith(f"train/mfcc/{damaged.id}.npy") and reasons[damaged.id].reason
    assert reasons[unlabelled.id].file.endswith(f"train/transcript/{unlabelled.id}.npy")
    for kept in scan.kept:
        assert isinstance(kept, Scanned)
        features = np.load(kept.source.features, allow_pickle=False)
        labels = np.load(kept.source.transcript, allow_pickle=False)
        assert (kept.n_frames, kept.dim) == features.shape and kept.stats.count == len(features)
        assert kept.stats.mean == pytest.approx(features.astype(np.float64).mean(axis=0))
        assert kept.n_phonemes is not None and kept.ctc_frames is not None
        assert kept.n_phonemes <= kept.ctc_frames < 2 * kept.n_phonemes or kept.n_phonemes <= 1
        assert len(labels) - 2 <= kept.n_phonemes <= len(labels)  # <sos>/<eos> markers, where present
    assert len({kept.digest for kept in scan.kept}) == len(scan.kept)

    test = scan_split(runner, splits["test"])  # unlabelled: no phoneme counts
    assert len(test.kept) == 5 and not test.rejected
    assert all(k.n_phonemes is None and k.ctc_frames is None for k in test.kept)

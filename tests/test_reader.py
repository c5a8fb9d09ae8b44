"""shards/reader.py: the stream: batches as planned, exact resumption, local and S3, real ranks, loader workers."""

import json
import pickle
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards import manifest
from shards.batch import Batch, collate
from shards.errors import UserError
from shards.manifest import read_split_metadata
from shards.plan import (
    plan_epoch,
)
from shards.reader import BatchStream, with_stand_ins
from shards.sample import Utterance
from shards.shard_file import CorruptShard
from tests.processes import accelerate_launch, why_failed
from tests.written import read_split

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(90, 12, 6), frames=(40, 400), seed=7)


@pytest.fixture(scope="module")
def dataset(raw, tmp_path_factory) -> str:
    """Three uneven train shards: fewer than 2 ranks × 2 workers."""
    dst = tmp_path_factory.mktemp("shards")
    build(Settings(str(raw), str(dst), shard_mb=0.5))
    return str(dst)


def _ids(stream: BatchStream) -> list[list[str]]:
    return [batch.ids for batch in stream]


def test_batches_match_the_plan_and_the_shards(dataset):
    stream = BatchStream(dataset, "train", max_frames=3000)
    stored = {u.id: u for _, u in read_split(dataset, "train")}
    expected = [[u.id for u in b.utterances] for b in stream.plan().rank_batches(0)]
    batches = list(stream)
    assert [b.ids for b in batches] == expected
    for batch in batches:
        assert batch.features.shape[0] == len(batch.ids) and batch.features.shape[2] == 13
        assert batch.features.shape[0] * batch.features.shape[1] <= 3000 or len(batch.ids) == 1
        for i, utterance_id in enumerate(batch.ids):
            n, n_labels = int(batch.feature_lengths[i]), int(batch.label_lengths[i])
            # Invariant: real frames and labels are the stored ones; padding is zeros (labels: blank)
            assert np.array_equal(batch.features[i, :n].numpy(), stored[utterance_id].features)
            assert not batch.features[i, n:].any()
            assert batch.labels[i, :n_labels].tolist() == stored[utterance_id].labels.tolist()
            assert not batch.labels[i, n_labels:].any()


def test_unlabelled_split_has_no_labels(dataset):
    batch = next(iter(BatchStream(dataset, "test")))
    assert batch.labels is None and batch.label_lengths is None


def test_same_seed_same_batches_and_epochs_differ(dataset):
    first = _ids(BatchStream(dataset, "train", max_frames=3000, seed=1))
    assert _ids(BatchStream(dataset, "train", max_frames=3000, seed=1)) == first
    stream = BatchStream(dataset, "train", max_frames=3000, seed=1)
    epoch0, epoch1 = _ids(stream), _ids(stream)
    assert epoch0 == first and stream.epoch == 2
    # Invariant: another epoch is another order of the same utterances
    assert epoch1 != epoch0
    assert sorted(i for b in epoch1 for i in b) == sorted(i for b in epoch0 for i in b)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("consumed", [1, 5])
def test_resume_after_k_batches_continues_exactly(dataset, num_workers, consumed):
    def stream() -> BatchStream:
        return BatchStream(dataset, "train", rank=1, world_size=2, num_workers=num_workers, max_frames=3000)

    whole = _ids(stream())
    interrupted = stream()
    head = []
    for batch in interrupted:
        head.append(batch.ids)
        if len(head) == consumed:
            break
    state = interrupted.state_dict()
    resumed = stream()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # it survives a checkpoint
    assert head + _ids(resumed) == whole
    assert resumed.epoch == 1 and resumed.consumed == 0


def test_resume_refuses_another_frame_budget(dataset):
    state = BatchStream(dataset, "train", max_frames=3000).state_dict()
    with pytest.raises(UserError, match="max_frames=3000"):
        BatchStream(dataset, "train", max_frames=4000).load_state_dict(state)


def _real_ids(batches) -> list[str]:
    return [
        i
        for batch in batches
        for i, repeated in zip(batch.ids, batch.repeated.tolist(), strict=True)
        if not repeated
    ]


def test_elastic_resume_on_other_ranks_and_workers_reads_every_utterance_once(dataset):
    """2 ranks of 2 workers stop after 2 batches each; 3 ranks without workers, then 1, go on."""
    old = [
        BatchStream(dataset, "train", rank=r, world_size=2, num_workers=2, max_frames=3000) for r in range(2)
    ]
    seen, saved = [], []
    for stream in old:
        batches = iter(stream)
        seen += _real_ids([next(batches), next(batches)])
        saved.append(json.loads(json.dumps(stream.state_dict())))
    new = [
        BatchStream(dataset, "train", rank=r, world_size=3, num_workers=0, max_frames=3000) for r in range(3)
    ]
    for stream in new:
        stream.load_state_dict(saved[0])
        batches = iter(stream)
        seen += _real_ids([next(batches)])
        saved.append(json.loads(json.dumps(stream.state_dict())))
    counts = {len(stream) for stream in new}
    assert len(counts) == 1  # Invariant: equal batch counts on the new ranks
    last = BatchStream(dataset, "train", num_workers=0, max_frames=3000)
    last.load_state_dict(saved[-1])
    seen += _real_ids(list(last))
    # Invariant: the epoch read every utterance exactly once over the three layouts
    assert sorted(seen) == sorted(u.id for _, u in read_split(dataset, "train"))
    assert last.epoch == 1 and last.state_dict()["earlier_layouts"] == []
    assert len(_ids(last)) == len(BatchStream(dataset, "train", max_frames=3000))  # later epochs: plain plans


def test_same_batches_from_local_disk_and_s3(raw, dataset, s3_bucket):
    build(Settings(str(raw), f"{s3_bucket}/shards", shard_mb=0.5))
    local = _ids(BatchStream(dataset, "train", world_size=2, rank=0, num_workers=2, max_frames=3000))
    remote = _ids(
        BatchStream(f"{s3_bucket}/shards", "train", world_size=2, rank=0, num_workers=2, max_frames=3000)
    )
    assert remote == local


def test_two_accelerate_ranks_get_equal_batches_covering_everything(raw, s3_bucket, tmp_path):
    url = f"{s3_bucket}/ranks"
    build(Settings(str(raw), url, shard_mb=0.5))
    result = accelerate_launch([str(REPO / "tests" / "rank_probe.py"), url, str(tmp_path), "2", "3000"])
    assert result.returncode == 0, why_failed(result.stderr)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Invariant: two real processes, the same number of batches each
    assert [r["world_size"] for r in reports] == [2, 2]
    assert len(reports[0]["batches"]) == len(reports[1]["batches"]) > 0
    seen = Counter(i for r in reports for b in r["batches"] for i in b["ids"])
    assert set(seen) == {f"tr{i:05d}" for i in range(90)}
    repeated = sum(flag for r in reports for b in r["batches"] for flag in b["repeated"])
    # Invariant: anything seen twice is a flagged repeat, and repeats stay within the plan's bound
    assert sum(seen.values()) - 90 == repeated
    assert (
        repeated
        == plan_epoch(
            *read_split_metadata(url, "train"), world_size=2, num_workers=2, max_frames=3000, seed=3, epoch=0
        ).repeated_utterances()
    )


def test_plan_command_prints_what_the_reader_yields(dataset):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shards",
            "plan",
            dataset,
            "--world-size",
            "2",
            "--num-workers",
            "2",
            "--max-frames",
            "3000",
            "--seed",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    document = json.loads(result.stdout)
    for rank in (0, 1):
        stream = BatchStream(
            dataset, "train", rank=rank, world_size=2, num_workers=2, max_frames=3000, seed=4
        )
        assert document["ranks"][rank]["batches"] == _ids(stream)
    plan = stream.plan(0)  # the document's figures are epoch 0's plan's
    assert document["padding_efficiency"] == pytest.approx(plan.padding_efficiency(), abs=1e-4)
    assert document["repeated_utterances"] == plan.repeated_utterances()


def _readme_reader_example() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n# read.py") + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_reader_example_runs_as_written(dataset, tmp_path):
    script = tmp_path / "read.py"
    script.write_text(_readme_reader_example())
    result = subprocess.run(
        [sys.executable, str(script), dataset], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, why_failed(result.stderr)
    assert "'epoch': 1, 'consumed': 0" in result.stdout


@pytest.fixture(scope="module")
def many_utterances(tmp_path_factory) -> str:
    """3,000 short utterances: a plan and index that pickled to 130 KB, twice a pipe's 64 KiB."""
    raw = write_hw3p2(tmp_path_factory.mktemp("many-raw"), counts=(3000, 0, 0), frames=(8, 24), seed=3)
    dst = tmp_path_factory.mktemp("many-shards")
    build(Settings(str(raw), str(dst), workers=2, shard_mb=0.25))
    return str(dst)


@pytest.mark.parametrize("size", ["small", "large"])
def test_an_unguarded_script_fails_fast_naming_the_fix(size, dataset, many_utterances, tmp_path):
    """The README example without its `__main__` guard: spawned workers re-run it and die starting.
    With a large dataset the main process once hung for ever writing the plan to a dead worker."""
    body = _readme_reader_example().split('if __name__ == "__main__":')[0]
    script = tmp_path / "unguarded.py"
    script.write_text(body + "main(sys.argv[1])\n")
    started = time.monotonic()
    url = dataset if size == "small" else many_utterances
    result = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert "LoaderStartError" in result.stderr and 'under `if __name__ == "__main__":`' in result.stderr
    assert time.monotonic() - started < 60


def test_a_loader_worker_is_sent_the_recipe_not_the_plan(dataset, many_utterances, monkeypatch):
    """What a spawned worker receives does not grow with the dataset: it rebuilds its share."""
    sent = []  # pickled bytes of each loader's dataset: what spawn sends every worker
    original = torch.utils.data.DataLoader.__init__

    def recording(loader, dataset, **options):
        sent.append(len(pickle.dumps(dataset)))
        original(loader, dataset, **options)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", recording)
    utterances = []
    for url in (dataset, many_utterances):
        stream = BatchStream(url, "train", num_workers=2, max_frames=2000)
        utterances.append(sum(len(batch.ids) for batch in stream))
    assert utterances == [90, 3000]
    assert len(sent) == 2 and max(sent) < 2048, sent


def test_a_split_rebuilt_under_a_running_reader_is_refused(dataset, tmp_path):
    copy = tmp_path / "copy"
    fs = fsspec.filesystem("file")
    fs.copy(dataset, str(copy), recursive=True)
    stream = BatchStream(str(copy), "train", num_workers=0, max_frames=2000)
    index = (copy / "train" / manifest.INDEX).read_text()
    (copy / "train" / manifest.INDEX).write_text(index.replace(stream.index.fingerprint, "0" * 64))
    with pytest.raises(CorruptShard, match=r"index.json changed while the epoch ran"):
        next(iter(stream))


def _one_utterance_batch(name: str) -> Batch:
    return collate([Utterance(name, np.ones((3, 2), np.float32), np.array([1, 2], np.int16))])


def test_skipped_shards_are_stood_in_for_by_the_next_readable_ones_repeats():
    """The stand-in stage alone: an int is a skipped shard's batch count, a list a read shard's batches."""
    a, b, c, d = (_one_utterance_batch(name) for name in "abcd")
    out = list(with_stand_ins([2, [a, b, c], [d], 1], "x/train"))
    # Invariant: as many batches as planned, each stand-in a flagged repeat of a readable batch
    assert [batch.ids[0] + "'" * bool(batch.repeated.all()) for batch in out] == [
        "a",
        "b",
        "c",
        "b'",
        "a'",
        "d",
        "d'",
    ]
    assert [batch.ids[0] for batch in with_stand_ins([[a, b], 3], "x")] == ["a", "b", "a", "b", "a"]
    with pytest.raises(CorruptShard, match="x/train: every shard of a worker's share is corrupt"):
        list(with_stand_ins([2, 1], "x/train"))

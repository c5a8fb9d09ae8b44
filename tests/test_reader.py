"""The streaming reader: balanced batch plans, exact resumption, local and S3, real ranks."""

import gzip
import hashlib
import io
import json
import pickle
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards import manifest
from shards.batch import Batch, collate
from shards.errors import UserError
from shards.manifest import ShardEntry, SplitIndex, read_split_metadata
from shards.plan import (
    DEFAULT_MAX_FRAMES,
    PlannedBatch,
    PlanRecipe,
    Utt,
    _even_out,
    plan_epoch,
    rest_of_epoch,
)
from shards.reader import BatchStream, with_stand_ins
from shards.sample import Utterance
from shards.shard_file import CorruptShard, read_shard
from tests.conftest import accelerate_launch, read_split, why_failed

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


# --- the plan ------------------------------------------------------------------------


def _synthetic_split(lengths: list[int], per_shard: int) -> tuple[SplitIndex, list[dict]]:
    """Index and manifest rows of a length-sorted split, as the pipeline would write them."""
    rows, shards = [], []
    ordered = sorted(lengths)
    for number, start in enumerate(range(0, len(ordered), per_shard)):
        name = f"shard-{number:06d}.tar"
        chunk = ordered[start : start + per_shard]
        rows += [
            {"key": f"{start + i:09d}", "id": f"u{start + i}", "shard": name, "n_frames": n}
            for i, n in enumerate(chunk)
        ]
        shards.append(ShardEntry(name, len(chunk), sum(chunk), 0, 0, "", chunk[0], chunk[-1]))
    return SplitIndex("train", True, 13, "", shards), rows


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("num_workers", [0, 1, 3])
@pytest.mark.parametrize(("utterances", "per_shard"), [(1000, 120), (7, 3), (30, 100)])
def test_plan_is_balanced_and_covers_every_utterance(world_size, num_workers, utterances, per_shard):
    rng = np.random.default_rng(utterances)
    index, rows = _synthetic_split(rng.integers(50, 2000, size=utterances).tolist(), per_shard)
    plan = plan_epoch(
        index, rows, world_size=world_size, num_workers=num_workers, max_frames=6000, seed=0, epoch=0
    )
    slots = world_size * max(num_workers, 1)
    # Invariant: every rank and every loader worker yields the same number of batches
    assert len({len(slot) for slot in plan.slots}) == 1 and len(plan.slots) == slots
    batches = [b for slot in plan.slots for b in slot]
    seen = Counter(u.id for b in batches for u in b.utterances)
    # Invariant: every utterance at least once; only flagged repeats more than once, fewer than one per slot
    assert set(seen) == {r["id"] for r in rows}
    assert sum(seen.values()) - len(rows) == plan.repeated_utterances()
    assert sum(b.repeated for b in batches) <= slots - 1
    # Invariant: a batch stays inside one shard and inside the budget (unless it is one long utterance)
    shard_of = {r["id"]: r["shard"] for r in rows}
    for b in batches:
        assert {shard_of[u.id] for u in b.utterances} == {b.shard}
        assert b.padded_frames <= 6000 or len(b.utterances) == 1


def _consumed_ids(plan, consumed: int) -> list[str]:
    return [u.id for r in range(plan.world_size) for b in plan.rank_batches(r)[:consumed] if not b.repeated for u in b.utterances]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "again"),
    [((2, 2), (3, 1), None), ((4, 0), (1, 3), None), ((1, 1), (8, 2), None), ((3, 2), (2, 2), (5, 1))],
)
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.99, 1.0])
@pytest.mark.parametrize("lengths", [(50, 2000), (3100, 5000)])  # the second: one per batch, so repeats
def test_the_rest_of_an_epoch_replanned_on_another_layout_sees_every_utterance_once(
    before, after, again, fraction, lengths
):
    """Elastic resume: the batches no rank took, over new ranks and workers (and again)."""
    rng = np.random.default_rng(7)
    index, rows = _synthetic_split(rng.integers(*lengths, size=301).tolist(), 40)
    plan = plan_epoch(
        index, rows, world_size=before[0], num_workers=before[1], max_frames=6000, seed=0, epoch=3
    )
    taken = int(fraction * plan.batches_per_rank)
    seen = _consumed_ids(plan, taken)
    for world_size, num_workers in [after] + ([again] if again else []):
        plan = rest_of_epoch(plan, taken, world_size=world_size, num_workers=num_workers)
        slots = world_size * max(num_workers, 1)
        # Invariant: the new layout's every rank and worker yields the same number of batches
        assert len(plan.slots) == slots and len({len(slot) for slot in plan.slots}) == 1
        assert sum(b.repeated for slot in plan.slots for b in slot) <= slots - 1
        taken = plan.batches_per_rank // 2
        seen += _consumed_ids(plan, taken)
    rest = [u.id for r in range(plan.world_size) for b in plan.rank_batches(r)[taken:] if not b.repeated for u in b.utterances]  # fmt: skip
    # Invariant: consumed before, consumed after and still to come: every utterance exactly once
    assert sorted(seen + rest) == sorted(r["id"] for r in rows)


def test_splitting_beats_repeating_when_it_can():
    index, rows = _synthetic_split([100] * 40, per_shard=40)  # 40 equal utterances → 4 batches of 10
    plan = plan_epoch(index, rows, world_size=3, num_workers=2, max_frames=1000, seed=0, epoch=0)
    # Invariant: 4 batches for 6 slots are evened out by splitting, never by repeating
    assert plan.repeated_utterances() == 0 and plan.batches_per_rank == 2


def test_plan_cuts_each_batch_as_long_as_fits_the_budget_counted_with_padding():
    """Budget 40 frames: four of 10 fit exactly (4 × 10), a fifth would not; 12 and 20 pad to 40; 50
    is over the budget alone and makes a batch of its own."""
    index, rows = _synthetic_split([10, 10, 10, 10, 12, 20, 50], per_shard=7)
    plan = plan_epoch(index, rows, world_size=1, num_workers=1, max_frames=40, seed=0, epoch=0)
    batches = sorted(plan.slots[0], key=lambda b: b.utterances[0].n_frames)
    assert [[u.n_frames for u in b.utterances] for b in batches] == [[10, 10, 10, 10], [12, 20], [50]]
    assert [(b.frames, b.padded_frames) for b in batches] == [(40, 40), (32, 40), (50, 50)]
    assert plan.padding_efficiency() == 122 / 130


def _batch(sizes: list[int]) -> list[PlannedBatch]:
    """Batches of the given numbers of utterances, each utterance named by its batch and place."""
    return [
        PlannedBatch("s", tuple(Utt(f"{b}.{i}", f"{b}.{i}", 10) for i in range(n)))
        for b, n in enumerate(sizes)
    ]


def test_splitting_halves_the_batches_with_most_utterances_then_repeats_the_smallest():
    # 4 batches for 3 slots: 2 more needed; the two largest (the 5, and the first 3) are split in halves
    evened = _even_out(_batch([3, 1, 3, 5]), 3)
    assert [[u.id for u in b.utterances] for b in evened] == [
        ["0.0"], ["0.1", "0.2"], ["1.0"], ["2.0", "2.1", "2.2"], ["3.0", "3.1"], ["3.2", "3.3", "3.4"],
    ]  # fmt: skip
    assert not any(b.repeated for b in evened)
    # 3 batches for 5 slots: one can be split, the other missing one repeats the smallest (the first of 1)
    evened = _even_out(_batch([2, 1, 1]), 5)
    assert [([u.id for u in b.utterances], b.repeated) for b in evened] == [
        (["0.0"], False), (["0.1"], False), (["1.0"], False), (["2.0"], False), (["1.0"], True),
    ]  # fmt: skip


def test_plan_slot_j_goes_to_rank_j_div_workers_and_worker_j_mod_workers():
    index, rows = _synthetic_split(list(range(100, 1300, 10)), per_shard=30)
    plan = plan_epoch(index, rows, world_size=2, num_workers=3, max_frames=3000, seed=0, epoch=0)
    assert [plan.worker_batches(j // 3, j % 3) for j in range(6)] == plan.slots
    assert len({id(plan.worker_batches(r, w)) for r in range(2) for w in range(3)}) == 6


def test_a_plan_recipe_replans_from_the_earliest_layout_through_each_later_one():
    index, rows = _synthetic_split(list(range(100, 2500, 7)), per_shard=40)
    first = plan_epoch(index, rows, world_size=2, num_workers=2, max_frames=4000, seed=5, epoch=1)
    second = rest_of_epoch(first, 3, world_size=3, num_workers=1)
    expected = rest_of_epoch(second, 2, world_size=1, num_workers=2)
    recipe = PlanRecipe(1, 2, 4000, 5, 1, earlier_layouts=((2, 2, 3), (3, 1, 2)))
    assert recipe.plan(index, rows) == expected != first
    assert PlanRecipe(2, 2, 4000, 5, 1).plan(index, rows) == first


def test_the_rest_of_a_plan_refuses_a_consumed_count_outside_the_epoch():
    index, rows = _synthetic_split(list(range(100, 1300, 10)), per_shard=30)
    plan = plan_epoch(index, rows, world_size=2, num_workers=1, max_frames=3000, seed=0, epoch=0)
    for consumed in (-1, plan.batches_per_rank + 1):
        with pytest.raises(
            ValueError, match=f"{consumed} batches consumed of an epoch of {plan.batches_per_rank}"
        ):
            rest_of_epoch(plan, consumed, world_size=1, num_workers=1)
    assert rest_of_epoch(plan, plan.batches_per_rank, world_size=1, num_workers=1).batches_per_rank == 0


def test_padding_efficiency_at_the_default_budget():
    # HW3P2-like lengths: 28,539 utterances, roughly log-normal around 1,200 frames, 64 MB shards
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(1200), 0.45, size=28539), 150, 3500).astype(int).tolist()
    index, rows = _synthetic_split(lengths, per_shard=1200)
    plan = plan_epoch(
        index, rows, world_size=4, num_workers=4, max_frames=DEFAULT_MAX_FRAMES, seed=0, epoch=0
    )
    assert plan.padding_efficiency() >= 0.97


# --- reading -------------------------------------------------------------------------


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
    return [i for batch in batches for i, repeated in zip(batch.ids, batch.repeated.tolist(), strict=True) if not repeated]  # fmt: skip


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


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip_a_feature_byte(data: bytes) -> bytes:
    position = data.index(b"NUMPY") + 400  # inside the first feature array: still a valid tar
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]


def _corrupt_copy(dataset: str, tmp_path: Path, damage=_truncate) -> tuple[Path, str]:
    copy = tmp_path / "copy"
    fs = fsspec.filesystem("file")
    fs.copy(dataset, str(copy), recursive=True)
    index, _ = read_split_metadata(str(copy), "train")
    victim = copy / "train" / index.shards[1].name
    victim.write_bytes(damage(victim.read_bytes()))
    return copy, index.shards[1].name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, r"\d+ bytes with sha256 \w+…, index.json says"),
        (_flip_a_feature_byte, r"\d+ bytes with sha256 \w+…, index.json says"),
    ],
)
def test_a_corrupt_shard_is_an_error_naming_it(dataset, tmp_path, damage, message):
    copy, victim = _corrupt_copy(dataset, tmp_path, damage)
    with pytest.raises(CorruptShard, match=rf"train/{victim}: {message}"):
        _ids(BatchStream(str(copy), "train", max_frames=3000))


def _gzip_bomb(_: bytes) -> bytes:
    """A 64 MB tar of zeros, gzip-compressed to about 64 KB."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed:
        for _ in range(64):
            packed.write(bytes(1 << 20))
    return buffer.getvalue()


@pytest.mark.parametrize("index_updated", [False, True])
def test_a_compressed_shard_is_never_expanded(dataset, tmp_path, index_updated):
    copy, victim = _corrupt_copy(dataset, tmp_path, _gzip_bomb)
    if index_updated:  # the index vouches for the bomb's bytes: still opened as a plain tar only
        path = copy / "train" / manifest.INDEX
        document = json.loads(path.read_text())
        data = (copy / "train" / victim).read_bytes()
        entry = next(e for e in document["shards"] if e["name"] == victim)
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        path.write_text(json.dumps(document))
    # measured in a process of its own: tracemalloc.stop() while other threads allocate (s3fs's loop,
    # pyarrow's pool) crashes CPython before 3.12.9 (gh-128679), which took a whole test run down
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_READ, str(copy), victim], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    peak, message = result.stdout.split(" ", 1)
    assert ("not an uncompressed tar" if index_updated else "index.json says") in message
    # Invariant: memory stays at the compressed size; the 64 MB inside are never produced
    assert int(peak) < 8 << 20


_PEAK_OF_READ = """
import os, sys, tracemalloc
from shards.shard_file import CorruptShard, read_shard
from shards.manifest import read_split_metadata
copy, victim = sys.argv[1], sys.argv[2]
index, rows = read_split_metadata(copy, "train")
entry = next(e for e in index.shards if e.name == victim)
keys = {r["key"] for r in rows if r["shard"] == victim}
tracemalloc.start()
try:
    read_shard(f"{copy}/train/{victim}", entry, keys)
except CorruptShard as error:
    print(tracemalloc.get_traced_memory()[1], error, flush=True)
    os._exit(0)  # no tracemalloc.stop(), no finalisation with tracing on
os._exit(1)
"""


@pytest.mark.parametrize(
    "name", ["../../elsewhere/x.tar", "/etc/passwd", "shard-000001.tar.gz", "shard-1.tar"]
)
def test_index_naming_anything_but_its_own_shards_is_refused(dataset, tmp_path, name):
    copy, _ = _corrupt_copy(dataset, tmp_path, lambda data: data)
    path = copy / "train" / manifest.INDEX
    document = json.loads(path.read_text())
    document["shards"][0]["name"] = name
    path.write_text(json.dumps(document))
    with pytest.raises(
        ValueError, match=f"shard name '{re.escape(name)}' is not of the form shard-NNNNNN.tar"
    ):
        BatchStream(str(copy), "train")


def test_a_corrupt_shard_can_be_skipped_and_counts_stay_equal(dataset, tmp_path, caplog):
    copy, victim = _corrupt_copy(dataset, tmp_path)
    index, _ = read_split_metadata(str(copy), "train")
    skipped = next(s for s in index.shards if s.name == victim)
    stream = BatchStream(str(copy), "train", max_frames=3000, skip_corrupt=True)
    batches = list(stream)
    assert len(batches) == len(BatchStream(dataset, "train", max_frames=3000))
    assert f"skipping {victim} ({skipped.utterances} utterances)" in caplog.text
    assert any(b.repeated.all() for b in batches)


class FlakyFileSystem(LocalFileSystem):
    """``flaky://PATH``: the local file, whose next ``failing`` opens fail as a reset connection would."""

    protocol = "flaky"
    failing, failures = 0, []

    def _open(self, path, mode="rb", **kwargs):
        if FlakyFileSystem.failing > 0:
            FlakyFileSystem.failing -= 1
            FlakyFileSystem.failures.append(path)
            raise ConnectionResetError("connection reset by peer")
        return super()._open(path, mode, **kwargs)


def test_transient_read_errors_are_retried(dataset, monkeypatch):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(FlakyFileSystem, "failing", 2)
    monkeypatch.setattr(FlakyFileSystem, "failures", [])
    monkeypatch.setattr("shards.retry.FIRST_DELAY_S", 0.01)
    index, rows = read_split_metadata(dataset, "train")
    entry = index.shards[0]
    keys = {r["key"] for r in rows if r["shard"] == entry.name}
    samples = read_shard(f"flaky://{dataset}/train/{entry.name}", entry, keys)
    assert len(FlakyFileSystem.failures) == 2 and set(samples) == keys
    FlakyFileSystem.failing = 10**9  # the store stays away: past the deadline, an error naming the URL
    with pytest.raises(OSError, match=r"flaky://.*: still failing after \d+ s of retries: connection reset"):
        read_shard(f"flaky://{dataset}/train/{entry.name}", entry, keys, deadline_s=0.5)


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

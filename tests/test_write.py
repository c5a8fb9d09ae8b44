"""pipeline/write.py's plan: utterances in length order cut into shards of about the budget, sized as the writer writes them."""

import tarfile

import numpy as np

from pipeline.layout import SourceUtterance
from pipeline.scan import Scanned
from pipeline.write import estimated_sample_bytes, plan_shards
from shards.sample import Utterance
from shards.stats import FeatureStats
from shards.writer import write_shard


def _scanned(utterance_id: str, frames: int, phonemes: int | None = 10, dim: int = 13) -> Scanned:
    source = SourceUtterance("train", utterance_id, "train", f"{utterance_id}.npy", None, True, True)
    return Scanned(source, frames, dim, phonemes, None, "digest", FeatureStats.empty(dim))


def test_the_estimate_of_a_labelled_sample_is_the_bytes_the_writer_writes(tmp_path):
    rng = np.random.default_rng(0)
    for frames, phonemes, utterance_id in [(1, 1, "a"), (97, 13, "utt-42"), (1500, 160, "x" * 100)]:
        utterance = Utterance(
            utterance_id,
            rng.standard_normal((frames, 13)).astype(np.float32),
            rng.integers(1, 41, phonemes).astype(np.int16),
        )
        write_shard([("000000000", utterance)], tmp_path / "one.tar")
        with tarfile.open(tmp_path / "one.tar") as archive:
            last = archive.getmembers()[-1]
        written = last.offset_data + -(-last.size // 512) * 512  # up to the end-of-archive blocks
        assert estimated_sample_bytes(_scanned(utterance_id, frames, phonemes)) == written


def test_shards_are_consecutive_runs_of_the_length_order_within_the_budget():
    kept = [_scanned(f"u{i:02d}", frames) for i, frames in enumerate([300, 40, 120, 40, 900, 75, 300, 60])]
    budget = 3 * estimated_sample_bytes(_scanned("u00", 300))
    shards = plan_shards(kept, budget)
    flat = [s.source.id for shard in shards for s in shard]
    # Invariant: every utterance once, shortest first, ties by id
    assert flat == [s.source.id for s in sorted(kept, key=lambda s: (s.n_frames, s.source.id))]
    sizes = [sum(estimated_sample_bytes(s) for s in shard) for shard in shards]
    assert all(size <= budget for size in sizes)
    # a shard ends only where its next utterance would pass the budget
    for size, following in zip(sizes[:-1], shards[1:], strict=True):
        assert size + estimated_sample_bytes(following[0]) > budget


def test_an_utterance_larger_than_the_budget_is_a_shard_of_its_own():
    kept = [_scanned("small", 10), _scanned("huge", 5000), _scanned("tiny", 5)]
    shards = plan_shards(kept, estimated_sample_bytes(_scanned("small", 10)) * 2)
    assert [[s.source.id for s in shard] for shard in shards] == [["tiny", "small"], ["huge"]]
    assert plan_shards([], 1e6) == []

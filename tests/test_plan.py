"""shards/plan.py: balanced epoch plans that cover every utterance, cut to the frame budget, and replan the rest of an epoch on another layout."""

from collections import Counter

import numpy as np
import pytest

from shards.manifest import DatasetError, ShardEntry, SplitIndex
from shards.plan import (
    DEFAULT_MAX_FRAMES,
    PlannedBatch,
    PlanRecipe,
    Utt,
    _even_out,
    from_sources,
    plan_epoch,
    rest_of_epoch,
)


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
    return [
        u.id
        for r in range(plan.world_size)
        for b in plan.rank_batches(r)[:consumed]
        if not b.repeated
        for u in b.utterances
    ]


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
    rest = [
        u.id
        for r in range(plan.world_size)
        for b in plan.rank_batches(r)[taken:]
        if not b.repeated
        for u in b.utterances
    ]
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
        ["0.0"],
        ["0.1", "0.2"],
        ["1.0"],
        ["2.0", "2.1", "2.2"],
        ["3.0", "3.1"],
        ["3.2", "3.3", "3.4"],
    ]
    assert not any(b.repeated for b in evened)
    # 3 batches for 5 slots: one can be split, the other missing one repeats the smallest (the first of 1)
    evened = _even_out(_batch([2, 1, 1]), 5)
    assert [([u.id for u in b.utterances], b.repeated) for b in evened] == [
        (["0.0"], False),
        (["0.1"], False),
        (["1.0"], False),
        (["2.0"], False),
        (["1.0"], True),
    ]


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


def test_training_can_be_told_which_source_folders_to_read():
    rows = [
        {"id": f"u{i}", "source": source}
        for i, source in enumerate(["train-clean-100", "train-clean-360"] * 3)
    ]
    assert from_sources(rows, (), "train") == rows  # no choice: every row
    chosen = from_sources(rows, ("train-clean-360",), "train")
    assert [row["id"] for row in chosen] == ["u1", "u3", "u5"]
    assert from_sources(rows, ("train-clean-360", "train-clean-100"), "train") == rows
    with pytest.raises(DatasetError) as refused:
        from_sources(rows, ("train-clean-360", "train-other-500"), "train")
    assert str(refused.value) == (
        "split 'train': no utterance from ['train-other-500']; its sources are ['train-clean-100', 'train-clean-360']"
    )
    older = [{"id": "u0"}, {"id": "u1", "source": "train-clean-100"}]  # a manifest from before the column
    with pytest.raises(
        DatasetError, match=r"^split 'train': its manifest does not record each utterance's source"
    ):
        from_sources(older, ("train-clean-100",), "train")


def test_the_default_frame_budget_is_40_000_padded_frames():
    """About 40 of HW3P2's ~1,000-frame utterances: the one home of the reader's and the training
    config's default, as the README's reader example spells it."""
    assert DEFAULT_MAX_FRAMES == 40_000

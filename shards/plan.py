"""The epoch plan: which rank and which loader worker yields which batch, decided up front.

The plan is computed from ``index.json`` and ``manifest.parquet`` alone (no shard is
opened), identically on every rank, from (seed, epoch, world size, workers, frame budget):

1. Shard order is a permutation drawn from (seed, epoch).
2. Batches are cut inside each length-sorted shard, in order, as long runs as fit the
   frame budget counted with padding (batch size × longest utterance). An utterance longer
   than the budget makes a batch of its own. Batch order within a shard is then shuffled.
3. The batch list must divide evenly into ``world_size × num_workers`` slots so that every
   rank, and every loader worker of a rank, yields exactly the same number of batches:
   the remainder ``d`` (< slots) is made up first by splitting the ``d`` batches with most
   utterances in two (no utterance repeated), and only if too few batches hold two or more
   utterances, by repeating the smallest batches. Repeated utterances are flagged in their
   batch and counted in the plan, so evaluation can ignore them; there are at most
   ``slots - 1`` repeated batches and usually none.
4. The list is cut into contiguous, equal slots: slot ``j`` goes to rank ``j // workers``,
   worker ``j % workers``. Each worker reads only the shards its batches come from, so
   fewer shards than ranks × workers still works (a shard may be read by two workers).

A rank's loader interleaves its workers round-robin, so its i-th batch is batch ``i // K``
of worker ``i % K``; resuming after ``k`` batches skips exactly those in each worker.

Elastic resume: when a run stopped after every rank took ``k`` batches of an epoch continues on
another number of ranks or workers, the rest of that epoch is re-planned (``rest_of_epoch``): the
batches no rank consumed, in slot order (so each slot's shard runs stay together), without the old
plan's repeats, evened out and cut for the new slots by rules 3 and 4. Every utterance is still
seen exactly once in the epoch, and every rank gets the same count. It is computed from metadata
in the same O(plan) time as any plan, however far into the epoch the run was; later epochs are
planned for the new layout from scratch.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from shards.manifest import DatasetError, SplitIndex

DEFAULT_MAX_FRAMES = 40_000  # padded frames per batch: ~40 utterances of HW3P2's ~1,000 frames


@dataclass(frozen=True)
class Utt:
    key: str
    id: str
    n_frames: int


@dataclass(frozen=True)
class PlannedBatch:
    shard: str
    utterances: tuple[Utt, ...]  # ascending length, as in the shard
    repeated: bool = False  # a copy of another batch, only there to even out the counts

    @property
    def padded_frames(self) -> int:
        return len(self.utterances) * max(u.n_frames for u in self.utterances)

    @property
    def frames(self) -> int:
        return sum(u.n_frames for u in self.utterances)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    world_size: int
    num_workers: int
    slots: list[list[PlannedBatch]]  # slot j = rank j // num_workers, worker j % num_workers

    def worker_batches(self, rank: int, worker: int) -> list[PlannedBatch]:
        return self.slots[rank * self.num_workers + worker]

    def rank_batches(self, rank: int) -> list[PlannedBatch]:
        """The batches of a rank in the order its loader yields them (workers round-robin)."""
        per_worker = [self.worker_batches(rank, w) for w in range(self.num_workers)]
        return [per_worker[i % self.num_workers][i // self.num_workers] for i in range(self.batches_per_rank)]

    @property
    def batches_per_rank(self) -> int:
        return len(self.slots[0]) * self.num_workers

    def padding_efficiency(self) -> float:
        batches = [b for slot in self.slots for b in slot]
        return sum(b.frames for b in batches) / sum(b.padded_frames for b in batches)

    def repeated_utterances(self) -> int:
        return sum(len(b.utterances) for slot in self.slots for b in slot if b.repeated)


def _cut(shard: str, utterances: list[Utt], max_frames: int) -> list[PlannedBatch]:
    batches, current = [], []
    for utt in utterances:  # ascending length: the newest utterance is the longest
        if current and (len(current) + 1) * utt.n_frames > max_frames:
            batches.append(PlannedBatch(shard, tuple(current)))
            current = []
        current.append(utt)
    if current:
        batches.append(PlannedBatch(shard, tuple(current)))
    return batches


def _even_out(batches: list[PlannedBatch], slots: int) -> list[PlannedBatch]:
    deficit = -len(batches) % slots
    splittable = set(
        sorted(
            (i for i, b in enumerate(batches) if len(b.utterances) > 1),
            key=lambda i: (-len(batches[i].utterances), i),
        )[:deficit]
    )
    result: list[PlannedBatch] = []
    for i, batch in enumerate(batches):
        if i in splittable:
            half = len(batch.utterances) // 2
            result += [
                PlannedBatch(batch.shard, batch.utterances[:half]),
                PlannedBatch(batch.shard, batch.utterances[half:]),
            ]
        else:
            result.append(batch)
    smallest = sorted(range(len(batches)), key=lambda i: (len(batches[i].utterances), i))
    for n in range(deficit - len(splittable)):
        original = batches[smallest[n % len(smallest)]]
        result.append(PlannedBatch(original.shard, original.utterances, repeated=True))
    return result


def plan_epoch(
    index: SplitIndex,
    manifest_rows: list[dict],
    *,
    world_size: int,
    num_workers: int,
    max_frames: int,
    seed: int,
    epoch: int,
) -> EpochPlan:
    """The plan for one epoch; ``manifest_rows`` are the split's manifest rows in shard order."""
    if not manifest_rows:
        raise DatasetError(f"split {index.split!r} has no utterances to plan")
    by_shard: dict[str, list[Utt]] = {}
    for row in manifest_rows:
        by_shard.setdefault(row["shard"], []).append(Utt(row["key"], row["id"], row["n_frames"]))
    rng = np.random.default_rng([seed, epoch])
    batches: list[PlannedBatch] = []
    for position in rng.permutation(len(index.shards)):
        shard = index.shards[position].name
        cut = _cut(shard, by_shard.get(shard, []), max_frames)
        batches += [cut[i] for i in rng.permutation(len(cut))]
    return _into_slots(epoch, batches, world_size, num_workers)


@dataclass(frozen=True)
class PlanRecipe:
    """What an epoch's plan is made of besides the split's metadata: a few numbers, so that each
    loader worker is sent this (not the plan) and rebuilds the same plan from the metadata."""

    world_size: int
    num_workers: int
    max_frames: int
    seed: int
    epoch: int
    # (world_size, num_workers, consumed) of the layouts this epoch ran on before a resume on
    # another layout, oldest first: the epoch is then what they left, re-planned
    earlier_layouts: tuple[tuple[int, int, int], ...] = ()
    sources: tuple[str, ...] = ()  # the source folders whose utterances are planned (empty: all)

    def plan(self, index: SplitIndex, manifest_rows: list[dict]) -> EpochPlan:
        layouts = [*self.earlier_layouts, (self.world_size, self.num_workers, 0)]
        world, workers, _ = layouts[0]
        plan = plan_epoch(
            index,
            from_sources(manifest_rows, self.sources, index.split),
            world_size=world,
            num_workers=workers,
            max_frames=self.max_frames,
            seed=self.seed,
            epoch=self.epoch,
        )
        for (_, _, consumed), (world, workers, _) in itertools.pairwise(layouts):
            plan = rest_of_epoch(plan, consumed, world_size=world, num_workers=workers)
        return plan


def from_sources(manifest_rows: list[dict], sources: tuple[str, ...], split: str) -> list[dict]:
    """The rows of the utterances read from ``sources`` (the manifest's ``source`` column: a
    layout's train-clean-100, train-clean-360, ...); every row when ``sources`` is empty."""
    if not sources:
        return manifest_rows
    present = {row.get("source") for row in manifest_rows}
    if None in present:
        raise DatasetError(
            f"split {split!r}: its manifest does not record each utterance's source folder (written "
            "before it did); re-run the pipeline on the same destination to choose among them"
        )
    unknown = sorted(set(sources) - present)
    if unknown:
        raise DatasetError(f"split {split!r}: no utterance from {unknown}; its sources are {sorted(present)}")
    return [row for row in manifest_rows if row["source"] in sources]


def worker_slots(num_workers: int) -> int:
    """Slots per rank: a loader without worker processes reads like one worker."""
    return max(num_workers, 1)


def _into_slots(epoch: int, batches: list[PlannedBatch], world_size: int, num_workers: int) -> EpochPlan:
    workers = worker_slots(num_workers)
    batches = _even_out(batches, world_size * workers)
    per_slot = len(batches) // (world_size * workers)
    slots = [batches[j * per_slot : (j + 1) * per_slot] for j in range(world_size * workers)]
    return EpochPlan(epoch, world_size, workers, slots)


def consumed_from_worker(consumed: int, worker: int, num_workers: int) -> int:
    """How many of a worker's batches are among the first ``consumed`` of its rank (round-robin)."""
    return max(0, -(-(consumed - worker) // num_workers))


def rest_of_epoch(plan: EpochPlan, consumed: int, *, world_size: int, num_workers: int) -> EpochPlan:
    """What ``plan`` still holds after every rank took ``consumed`` batches, re-planned for
    ``world_size`` ranks of ``num_workers`` workers (see the module's note on elastic resume)."""
    if not 0 <= consumed <= plan.batches_per_rank:
        raise ValueError(f"{consumed} batches consumed of an epoch of {plan.batches_per_rank} per rank")
    left = [
        batch
        for rank in range(plan.world_size)
        for worker in range(plan.num_workers)
        for batch in plan.worker_batches(rank, worker)[
            consumed_from_worker(consumed, worker, plan.num_workers) :
        ]
        if not batch.repeated  # a copy: its original is in the plan, consumed or left
    ]
    return _into_slots(plan.epoch, left, world_size, num_workers)

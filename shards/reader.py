"""Streams planned, padded batches from a split's shards, on disk or on S3, for one rank.

    stream = BatchStream(url, "train", rank=r, world_size=w, num_workers=4, max_frames=40_000)
    for batch in stream:          # one epoch; the next loop is the next epoch
        ...
    state = stream.state_dict()   # epoch and batches consumed; load_state_dict resumes exactly

The plan (``shards/plan.py``) fixes every batch before any shard is opened, so all ranks
yield the same number of batches by construction. Each loader worker is sent the plan's
recipe, not the plan, rebuilds the plan from the split's metadata (``shards/manifest.py``), and
runs its own batches through three stages: the runs of batches that share a shard, each shard
read whole and checked (``shards/shard_file.py``), and the batches collated (``shards/batch.py``).
Transient read errors are retried with backoff; a corrupt shard is an error naming it, or, with
``skip_corrupt``, is logged with its utterance count and its batches are replaced by repeats of
the worker's other batches (so the counts stay equal).
"""

import contextlib
import functools
import itertools
import logging
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter

import torch

from shards import s3
from shards.batch import Batch, collate
from shards.errors import UserError
from shards.manifest import ShardEntry, read_split_metadata
from shards.plan import (
    DEFAULT_MAX_FRAMES,
    EpochPlan,
    PlannedBatch,
    PlanRecipe,
    consumed_from_worker,
    from_sources,
    worker_slots,
)
from shards.retry import IO_DEADLINE_S, with_retries
from shards.sample import Utterance
from shards.shard_file import CorruptShard, read_shard

log = logging.getLogger("shards.reader")


class LoaderStartError(UserError, RuntimeError):
    """A loader worker died before its first batch (typically: a spawned worker re-ran an unguarded script)."""


@dataclass(frozen=True)
class _WorkerError:
    """An error a loader worker met, sent to the main process as data and raised there as it was
    (torch would re-raise it as a new one with the worker's traceback pasted into its message)."""

    error: Exception


_CARRIED_ERRORS = (UserError, OSError)  # those the commands refuse in one line (shards/errors.py)


class ShardDataset(torch.utils.data.IterableDataset):
    """One rank's batches for one epoch; each DataLoader worker yields its planned slot.

    It holds only the split's URL, the plan's recipe and the index's fingerprint, so what each
    spawned worker is sent stays a few hundred bytes at any dataset size (the plan of HW3P2's
    28,539 utterances pickles to 1.1 MB; over a pipe's 64 KiB, a worker dying as it starts
    leaves the main process blocked writing to it). Each worker reads the metadata and rebuilds
    the plan itself, refusing a split whose index changed since the epoch was planned."""

    def __init__(
        self,
        url: str,
        split: str,
        recipe: PlanRecipe,
        fingerprint: str,
        rank: int,
        skip_first: int,
        skip_corrupt: bool,
        io_deadline_s: float,
    ):
        self.url, self.split, self.recipe, self.fingerprint = url.rstrip("/"), split, recipe, fingerprint
        self.rank, self.skip_first = rank, skip_first
        self.skip_corrupt, self.io_deadline_s = skip_corrupt, io_deadline_s

    def __iter__(self) -> Iterator[Batch | _WorkerError]:
        if torch.utils.data.get_worker_info() is None:
            yield from self._planned()
            return
        try:
            yield from self._planned()
        except _CARRIED_ERRORS as error:
            yield _WorkerError(s3.carried(error))

    def _planned(self) -> Iterator[Batch]:
        where = f"{self.url}/{self.split}"
        index, rows = with_retries(
            lambda: read_split_metadata(self.url, self.split), where, self.io_deadline_s
        )
        if index.fingerprint != self.fingerprint:
            raise CorruptShard(
                f"{where}: index.json changed while the epoch ran (fingerprint {index.fingerprint[:12]}…, "
                f"planned from {self.fingerprint[:12]}…): the split was rebuilt under a running reader"
            )
        plan = self.recipe.plan(index, rows)
        info = torch.utils.data.get_worker_info()
        workers = plan.num_workers
        # The loader starts its round-robin at its worker 0, so after k consumed batches its
        # worker j plays the plan's worker (j + k) % K; that worker's first batches, those
        # among the rank's first k, were consumed already.
        worker = ((0 if info is None else info.id) + self.skip_first) % workers
        batches = plan.worker_batches(self.rank, worker)
        done = consumed_from_worker(self.skip_first, worker, workers)
        yield from self._batches(batches[done:], {entry.name: entry for entry in index.shards})

    def _batches(self, batches: list[PlannedBatch], entries: dict[str, ShardEntry]) -> Iterator[Batch]:
        runs = shard_runs(batches)
        read = self._read_runs(runs, entries)
        yield from with_stand_ins(collated(read), f"{self.url}/{self.split}")

    def _read_runs(
        self, runs: Iterable[list[PlannedBatch]], entries: dict[str, ShardEntry]
    ) -> Iterator[tuple[list[PlannedBatch], dict[str, Utterance] | None]]:
        """Each run with its shard's samples, or with None where the shard is corrupt and skipped."""
        for run in runs:
            shard = run[0].shard
            keys = {u.key for planned in run for u in planned.utterances}
            try:
                url = f"{self.url}/{self.split}/{shard}"
                yield run, read_shard(url, entries[shard], keys, self.io_deadline_s)
            except CorruptShard as error:
                if not self.skip_corrupt:
                    raise
                log.error("skipping %s (%d utterances): %s", shard, entries[shard].utterances, error)
                yield run, None


def shard_runs(batches: list[PlannedBatch]) -> Iterator[list[PlannedBatch]]:
    """The batches in order, as runs of consecutive batches from one shard (each shard read once)."""
    for _, run in itertools.groupby(batches, key=attrgetter("shard")):
        yield list(run)


def collated(
    read: Iterable[tuple[list[PlannedBatch], dict[str, Utterance] | None]],
) -> Iterator[list[Batch] | int]:
    """Each run's batches, or, for a skipped shard, how many batches it owed."""
    for run, samples in read:
        if samples is None:
            yield len(run)
        else:
            yield [collate([samples[u.key] for u in planned.utterances], planned.repeated) for planned in run]


def with_stand_ins(runs: Iterable[list[Batch] | int], where: str) -> Iterator[Batch]:
    """The batches, each skipped shard's replaced by as many repeats of the latest readable shard's,
    given as soon as one has been read (before it where the skipped shard came first)."""
    owed, good = 0, []
    for run in runs:
        if isinstance(run, int):
            owed += run
            continue
        good = run
        yield from good
        yield from _repeats(owed, good)
        owed = 0
    if owed and not good:
        raise CorruptShard(f"{where}: every shard of a worker's share is corrupt")
    yield from _repeats(owed, good)


def _repeats(count: int, good: list[Batch]) -> list[Batch]:
    """``count`` stand-ins, repeats of ``good``'s batches, the last one's first."""
    return [good[i % len(good)].as_repeat() for i in reversed(range(count))] if good else []


# Preemption's signals (train/preemption.py) are the rank's to handle: it checkpoints, then ends its
# loader. Slurm's scancel and its time-limit warning, and a kill of the process group, reach the
# workers too, and a worker ended by one would end its rank before the checkpoint; so workers ignore
# them, and hold them back from their birth (they inherit the rank's mask: _preemption_held) until then.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def _preemption_held() -> Iterator[None]:
    """Preemption's signals held back while loader workers start; one that arrives meanwhile reaches
    this process after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _count_start(started, worker_id: int) -> None:
    """A loader worker's first act: ignore preemption's signals (held back until now), and count
    itself as up (it has imported everything and unpickled its dataset)."""
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPTION_SIGNALS)
    with started.get_lock():
        started.value += 1


class BatchStream:
    """A rank's batches epoch after epoch, with its position: the loader training iterates."""

    def __init__(
        self,
        url: str,
        split: str,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        max_frames: int = DEFAULT_MAX_FRAMES,
        seed: int = 0,
        epoch: int = 0,
        skip_corrupt: bool = False,
        prefetch_factor: int = 4,
        io_deadline_s: float = IO_DEADLINE_S,
        pin_memory: bool = False,
        sources: tuple[str, ...] = (),
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.url, self.split = url, split
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.max_frames, self.seed, self.epoch = max_frames, seed, epoch
        self.skip_corrupt, self.prefetch_factor = skip_corrupt, prefetch_factor
        # page-locked batches, for copies to a GPU that do not block; only for a GPU consumer (asking
        # for them creates a CUDA context on GPU 0 wherever the process runs)
        self.pin_memory = pin_memory
        self.io_deadline_s = io_deadline_s  # how long a shard read waits out an unreachable store
        self.consumed = 0  # batches of the current epoch already handed out
        # the layouts this epoch ran on before a resume on another layout (PlanRecipe)
        self.earlier_layouts: list[tuple[int, int, int]] = []
        self.sources = tuple(sources)  # the source folders it reads (the manifest's; empty: all)
        index, rows = read_split_metadata(url, split)
        self.index, self.rows = index, from_sources(rows, self.sources, split)

    @property
    def feature_dim(self) -> int:
        return self.index.feature_dim

    def recipe(self, epoch: int | None = None) -> PlanRecipe:
        """How the plan of ``epoch`` is made (default: the current one, as re-planned by elastic resumes)."""
        current = epoch is None or epoch == self.epoch
        return PlanRecipe(
            self.world_size,
            self.num_workers,
            self.max_frames,
            self.seed,
            self.epoch if epoch is None else epoch,
            tuple(self.earlier_layouts) if current else (),
            self.sources,
        )

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The plan of ``epoch`` (default: the current one, as re-planned by elastic resumes)."""
        return self.recipe(epoch).plan(self.index, self.rows)

    def __len__(self) -> int:
        return self.plan().batches_per_rank

    def __iter__(self) -> Iterator[Batch]:
        recipe = self.recipe()
        plan = recipe.plan(self.index, self.rows)
        dataset = ShardDataset(
            self.url,
            self.split,
            recipe,
            self.index.fingerprint,
            self.rank,
            self.consumed,
            self.skip_corrupt,
            self.io_deadline_s,
        )
        context = torch.multiprocessing.get_context("spawn")  # fsspec clients do not survive fork
        started = context.Value("i", 0) if self.num_workers else None  # workers that came up
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            multiprocessing_context=context if self.num_workers else None,
            worker_init_fn=functools.partial(_count_start, started) if self.num_workers else None,
            # its own generator: starting a loader must not draw from the global RNG, or a run resumed
            # mid-epoch (whose loader starts at another moment) would see other dropout and augmentation
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in self._checked(loader, started):
            self.consumed += 1
            yield batch
        if self.consumed != plan.batches_per_rank:
            raise RuntimeError(
                f"rank {self.rank} yielded {self.consumed} batches, planned {plan.batches_per_rank}"
            )
        self.epoch += 1
        self.consumed = 0
        self.earlier_layouts = []

    def _checked(self, loader: torch.utils.data.DataLoader, started) -> Iterator[Batch]:
        """The loader's batches, a worker's carried error raised as it was."""
        for item in self._watched(loader, started):
            if isinstance(item, _WorkerError):
                raise item.error
            yield item

    def _watched(self, loader: torch.utils.data.DataLoader, started) -> Iterator[Batch | _WorkerError]:
        """The loader's items; a loader that fails before its first item while a worker never came
        up is a :class:`LoaderStartError` (torch raises a RuntimeError for a worker that died)."""
        delivered = False
        try:
            with _preemption_held():
                items = iter(loader)  # starts the workers
            for item in items:
                delivered = True
                yield item
        except RuntimeError as failure:
            if delivered or started is None or started.value == self.num_workers:
                raise
            raise LoaderStartError(
                f"{self.url}/{self.split}: a loader worker exited before delivering its first batch. Loader "
                "workers are spawned and each re-imports your main script, so a script that iterates a "
                'BatchStream must do it under `if __name__ == "__main__":`; otherwise rerun with '
                "num_workers=0 to see the worker's own error"
            ) from failure

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "max_frames": self.max_frames,
            "seed": self.seed,
            "earlier_layouts": [list(layout) for layout in self.earlier_layouts],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` was taken. Another world size or worker count is fine (elastic
        resume: the rest of the epoch is re-planned); the frame budget and seed make the batches."""
        for key in ("max_frames", "seed"):
            if state[key] != getattr(self, key):
                raise UserError(
                    f"cannot resume: the saved position is for {key}={state[key]}, this stream has "
                    f"{getattr(self, key)} (the epoch plan depends on it)"
                )
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self.earlier_layouts = [tuple(layout) for layout in state.get("earlier_layouts", [])]
        saved_layout = (state["world_size"], state["num_workers"])
        changed = saved_layout[0] != self.world_size or worker_slots(saved_layout[1]) != worker_slots(
            self.num_workers
        )
        if changed and self.consumed:
            self.earlier_layouts.append((*saved_layout, self.consumed))
            self.consumed = 0

"""Streams planned, padded batches from a split's shards, on disk or on S3, for one rank.

    stream = BatchStream(url, "train", rank=r, world_size=w, num_workers=4, max_frames=40_000)
    for batch in stream:          # one epoch; the next loop is the next epoch
        ...
    state = stream.state_dict()   # epoch and batches consumed; load_state_dict resumes exactly

The plan (``shards/plan.py``) fixes every batch before any shard is opened, so all ranks
yield the same number of batches by construction. Each loader worker is sent the plan's
recipe, not the plan, rebuilds the plan from the split's metadata, and reads the shards of
its own batches whole, through fsspec (WebDataset's opener, registered here for ``s3://``),
reading no more than ``index.json`` says it holds and checking its sha256 before parsing
anything, opens it as an uncompressed tar, keeps only its samples and yields its batches. Transient read errors are retried with backoff; a corrupt shard is an error naming
it, or, with ``skip_corrupt``, is logged with its utterance count and its batches are
replaced by repeats of the worker's other batches (so the counts stay equal).
"""

import hashlib
import io
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import fsspec
import numpy as np
import torch
import webdataset as wds

from shards import manifest, s3, sample
from shards.manifest import SplitIndex
from shards.plan import (
    DEFAULT_MAX_FRAMES,
    EpochPlan,
    PlannedBatch,
    PlanRecipe,
    consumed_from_worker,
    worker_slots,
)
from shards.retry import IO_DEADLINE_S, with_retries
from shards.stats import read_stats

log = logging.getLogger("shards.reader")


def _fsspec_opener(url: str, mode: str = "rb", bufsize: int = 8192, **_) -> object:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.open(path, mode, block_size=max(bufsize, 1 << 22))  # 4 MB reads: few requests per shard


# webdataset 1.0 has no s3:// opener; registered at import, so spawned workers have it too
wds.gopen_schemes["s3"] = _fsspec_opener


def _open_shard(url: str):
    """Remote URLs through WebDataset's openers; local paths through fsspec (gopen may refuse them)."""
    if urlparse(url).scheme in ("", "file"):
        return _fsspec_opener(url)
    return wds.gopen(url)


class LoaderStartError(RuntimeError):
    """A loader worker died before its first batch (typically: a spawned worker re-ran an unguarded script)."""


class CorruptShard(RuntimeError):
    """A shard that cannot be read as the index describes it; the message names it."""


@dataclass(frozen=True)
class _WorkerError:
    """An error a loader worker met, sent to the main process as data and raised there as it was
    (torch would re-raise it as a new one with the worker's traceback pasted into its message)."""

    error: Exception


_CARRIED_ERRORS = (CorruptShard, manifest.DatasetError, OSError)  # those the commands refuse in one line


@dataclass
class Batch:
    ids: list[str]
    features: torch.Tensor  # float32 (B, T, D), zero-padded
    feature_lengths: torch.Tensor  # int64 (B,)
    labels: torch.Tensor | None  # int64 (B, L), padded with the blank (0); None if unlabelled
    label_lengths: torch.Tensor | None  # int64 (B,)
    repeated: torch.Tensor  # bool (B,): a repeat that only evens out batch counts

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def _map(self, function) -> "Batch":
        labels = None if self.labels is None else function(self.labels)
        label_lengths = None if self.label_lengths is None else function(self.label_lengths)
        return Batch(
            self.ids,
            function(self.features),
            function(self.feature_lengths),
            labels,
            label_lengths,
            function(self.repeated),
        )


def collate(utterances: list[sample.Utterance], repeated: bool = False) -> Batch:
    lengths = torch.tensor([len(u.features) for u in utterances], dtype=torch.int64)
    dim = utterances[0].features.shape[1]
    features = torch.zeros(len(utterances), int(lengths.max()), dim, dtype=torch.float32)
    for i, u in enumerate(utterances):
        features[i, : len(u.features)] = torch.from_numpy(u.features)
    labels = label_lengths = None
    if utterances[0].labels is not None:
        label_lengths = torch.tensor([len(u.labels) for u in utterances], dtype=torch.int64)
        labels = torch.zeros(len(utterances), int(label_lengths.max()), dtype=torch.int64)
        for i, u in enumerate(utterances):
            labels[i, : len(u.labels)] = torch.from_numpy(u.labels.astype(np.int64))
    flags = torch.full((len(utterances),), repeated, dtype=torch.bool)
    return Batch([u.id for u in utterances], features, lengths, labels, label_lengths, flags)


def read_split_metadata(url: str, split: str) -> tuple[SplitIndex, list[dict]]:
    """The split's index and manifest rows (shard order); a missing index means an incomplete split."""
    where = f"{url.rstrip('/')}/{split}"
    try:
        with fsspec.open(f"{where}/{manifest.INDEX}", "rb") as handle:
            index = SplitIndex.from_json(handle.read(), f"{where}/{manifest.INDEX}")
        with fsspec.open(f"{where}/{manifest.MANIFEST}", "rb") as handle:
            rows = manifest.read_manifest(handle.read()).to_pylist()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{where}: not a complete split ({error})") from error
    return index, rows


def read_dataset_stats(url: str) -> dict:
    """The dataset's ``stats.json`` (feature_dim, frames, mean, std, m2) as a dict, checked."""
    return read_stats(f"{url.rstrip('/')}/{manifest.STATS}").document()


def _verified_bytes(url: str, entry: manifest.ShardEntry) -> bytes:
    """The shard's raw bytes, read no further than the index's size and checked against its sha256."""
    with _open_shard(url) as raw:
        data = raw.read(entry.bytes + 1)  # one byte more tells a longer file from the right one
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.bytes or digest != entry.sha256:
        size = f"{len(data)} bytes" if len(data) <= entry.bytes else f"more than {entry.bytes} bytes"
        raise CorruptShard(
            f"{url}: {size} with sha256 {digest[:12]}…, index.json says {entry.bytes} bytes with {entry.sha256[:12]}…"
        )
    return data


def _read_samples(url: str, entry: manifest.ShardEntry, keys: set[str]) -> dict[str, sample.Utterance]:
    """The wanted samples of one shard. Nothing is parsed before its size and sha256 match the index,
    and the tar is opened uncompressed only (a compressed one would expand in memory first)."""
    data = _verified_bytes(url, entry)
    members: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                key, _, extension = member.name.partition(".")
                if key in keys and member.isfile():
                    members.setdefault(key, {})[extension] = archive.extractfile(member).read()
    except tarfile.TarError as error:
        raise CorruptShard(f"{url}: not an uncompressed tar ({type(error).__name__}: {error})") from error
    missing = keys - members.keys()
    if missing:
        raise CorruptShard(f"{url}: lacks {len(missing)} planned samples, e.g. {sorted(missing)[0]}")
    try:
        return {key: sample.decode(parts, f"{url} sample {key}") for key, parts in members.items()}
    except ValueError as error:
        raise CorruptShard(str(error)) from error


def read_shard(
    url: str, entry: manifest.ShardEntry, keys: set[str], deadline_s: float = IO_DEADLINE_S
) -> dict[str, sample.Utterance]:
    """``_read_samples``, transient I/O failures retried with backoff for up to ``deadline_s``."""
    try:
        return with_retries(lambda: _read_samples(url, entry, keys), url, deadline_s)
    except FileNotFoundError as error:
        raise CorruptShard(f"{url}: shard missing ({error})") from error


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

    def _batches(
        self, batches: list[PlannedBatch], entries: dict[str, manifest.ShardEntry]
    ) -> Iterator[Batch]:
        owed: list[PlannedBatch] = []  # batches of skipped shards, to be replaced by repeats
        good: list[Batch] = []  # the last readable shard's batches, to repeat
        position = 0
        while position < len(batches):
            shard = batches[position].shard
            run = []
            while position < len(batches) and batches[position].shard == shard:
                run.append(batches[position])
                position += 1
            keys = {u.key for b in run for u in b.utterances}
            try:
                url = f"{self.url}/{self.split}/{shard}"
                samples = read_shard(url, entries[shard], keys, self.io_deadline_s)
            except CorruptShard as error:
                if not self.skip_corrupt:
                    raise
                log.error("skipping %s (%d utterances): %s", shard, entries[shard].utterances, error)
                owed += run
                continue
            good = []
            for planned in run:
                batch = collate([samples[u.key] for u in planned.utterances], planned.repeated)
                good.append(batch)
                yield batch
            yield from _repay(owed, good)
        yield from _repay(owed, good)
        if owed:
            raise CorruptShard(f"{self.url}/{self.split}: every shard of a worker's share is corrupt")


def _repay(owed: list[PlannedBatch], good: list[Batch]) -> Iterator[Batch]:
    """Stand-ins for the batches of skipped shards: repeats of the last readable shard's batches."""
    while owed and good:
        owed.pop()
        yield _as_repeat(good[len(owed) % len(good)])


def _as_repeat(batch: Batch) -> Batch:
    return Batch(
        batch.ids,
        batch.features,
        batch.feature_lengths,
        batch.labels,
        batch.label_lengths,
        torch.ones_like(batch.repeated),
    )


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
        self.index, self.rows = read_split_metadata(url, split)

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
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            multiprocessing_context="spawn"
            if self.num_workers
            else None,  # fsspec clients do not survive fork
            # its own generator: starting a loader must not draw from the global RNG, or a run resumed
            # mid-epoch (whose loader starts at another moment) would see other dropout and augmentation
            generator=torch.Generator().manual_seed(self.seed),
        )
        delivered = False
        try:
            for batch in loader:
                if isinstance(batch, _WorkerError):
                    raise batch.error
                delivered = True
                self.consumed += 1
                yield batch
        except RuntimeError as error:
            if delivered or "exited unexpectedly" not in str(error):
                raise
            raise LoaderStartError(
                f"{self.url}/{self.split}: a loader worker exited before delivering its first batch. Loader "
                "workers are spawned and each re-imports your main script, so a script that iterates a "
                'BatchStream must do it under `if __name__ == "__main__":`; otherwise rerun with '
                "num_workers=0 to see the worker's own error"
            ) from error
        if self.consumed != plan.batches_per_rank:
            raise RuntimeError(
                f"rank {self.rank} yielded {self.consumed} batches, planned {plan.batches_per_rank}"
            )
        self.epoch += 1
        self.consumed = 0
        self.earlier_layouts = []

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
                raise ValueError(
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

"""Loader start-up at HW3P2 scale: what each spawned worker is sent, and how soon batches come.

    .venv/bin/python -m bench.loader_start [--utterances 28539] [--workers 4] [--epochs 2]

Builds a training split with HW3P2's utterance count (short utterances, so it builds in a minute:
the plan and index grow with the number of utterances and shards, not with their frames), then
starts a rank's loader ``--epochs`` times with ``--workers`` spawned workers and prints, per
epoch start: the bytes each worker process is sent by the spawn (measured where
multiprocessing pickles it), the time to unpickle that, and the seconds to the first batch and to
the end of the epoch. A payload over 64 KiB (a pipe's buffer) is the one a dying worker can hang
the main process on.
"""

import argparse
import tempfile
import time
from multiprocessing import popen_spawn_posix, reduction
from pathlib import Path

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.reader import BatchStream

PIPE_BUFFER = 64 * 1024

payloads: list[bytes] = []


def _recording_dump(obj, file, protocol=None) -> None:
    """multiprocessing's own dump, keeping a copy of what it wrote to the child's pipe."""
    data = reduction.ForkingPickler.dumps(obj, protocol)
    payloads.append(bytes(data))
    file.write(data)


def _time_epoch(stream: BatchStream) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    for _ in stream:
        first = first or time.perf_counter() - start
    return first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=28539)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--shard-mb", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-loader-start-"))
    raw = write_hw3p2(work / "raw", counts=(args.utterances, 0, 0), frames=(8, 24), seed=0)
    started = time.perf_counter()
    build(Settings(str(raw), str(work / "shards"), workers=2, shard_mb=args.shard_mb))
    print(f"built {args.utterances} utterances in {time.perf_counter() - started:.0f} s")
    popen_spawn_posix.reduction.dump = _recording_dump  # what Popen._launch writes to each worker
    stream = BatchStream(str(work / "shards"), "train", num_workers=args.workers, max_frames=40_000)
    print(f"{len(stream.index.shards)} shards, {len(stream)} batches per epoch, {args.workers} workers")
    print(f"{'epoch':>5} {'KiB sent/worker':>16} {'first batch s':>14} {'epoch s':>8}")
    for epoch in range(args.epochs):
        payloads.clear()
        first, whole = _time_epoch(stream)
        sizes = [len(p) for p in payloads]
        print(f"{epoch:5d} {max(sizes) / 1024:16.1f} {first:14.2f} {whole:8.2f}")
    verdict = "over" if max(sizes) > PIPE_BUFFER else "under"
    print(f"\nlargest payload {max(sizes)} bytes: {verdict} a pipe's {PIPE_BUFFER} bytes")


if __name__ == "__main__":
    main()

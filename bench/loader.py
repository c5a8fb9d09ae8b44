"""Reading speed: this reader (local disk, S3) vs the notebook way (one .npy per utterance via s3fs).

    .venv/bin/python -m bench.loader [--train 3000] [--workers 2] [--max-frames 40000] [--batch-size 32]

Writes a random HW3P2-layout training set (lengths uniform in --frames), shards it locally
and on SeaweedFS (loopback), and reads one epoch three ways, each with --workers loader
processes, start-up included:
  (a) BatchStream from local shards, (b) BatchStream from S3 shards,
  (c) the notebook way: a map-style Dataset that np.loads each utterance's .npy from S3
      through s3fs, shuffled batches of --batch-size padded with pad_sequence.
Prints real (unpadded) frames/s, padding efficiency, and the ratios the issue targets.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from loopback.s3 import running_s3_server
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.reader import BatchStream


class NotebookDataset(torch.utils.data.Dataset):
    """What HW3P2 notebooks do: list the files, np.load one utterance per item."""

    def __init__(self, root: str):
        self.root = root
        self.files = sorted(fsspec.filesystem("s3").ls(f"{root}/train/mfcc"))
        self.fs = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fs is None:  # one client per worker process
            self.fs = fsspec.filesystem("s3", skip_instance_cache=True)
        with self.fs.open(self.files[i], "rb") as handle:
            return torch.from_numpy(np.load(handle, allow_pickle=False))


def _pad(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_sequence(batch, batch_first=True), torch.tensor([len(x) for x in batch])


def _time_reader(url: str, workers: int, max_frames: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    real = padded = 0
    for batch in BatchStream(url, "train", num_workers=workers, max_frames=max_frames):
        real += int(batch.feature_lengths.sum())
        padded += batch.features.shape[0] * batch.features.shape[1]
    return time.perf_counter() - start, real, padded


def _time_notebook(url: str, workers: int, batch_size: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    dataset = NotebookDataset(url)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=_pad,
        multiprocessing_context="spawn" if workers else None,
    )
    real = padded = 0
    for features, lengths in loader:
        real += int(lengths.sum())
        padded += features.shape[0] * features.shape[1]
    return time.perf_counter() - start, real, padded


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--frames", type=int, nargs=2, default=(200, 2000))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=40000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    raw = write_hw3p2(work / "raw", counts=(args.train, 0, 0), frames=tuple(args.frames), seed=0)
    with running_s3_server(work / "s3") as server:
        os.environ.update(server.client_env())
        fs = fsspec.filesystem("s3")
        fs.mkdir("bench")
        fs.put(str(raw), "bench/raw", recursive=True)
        build(Settings(str(raw), str(work / "shards"), workers=2))
        build(Settings(str(raw), "s3://bench/shards", workers=2))
        results = {
            "reader, local shards": _time_reader(str(work / "shards"), args.workers, args.max_frames),
            "reader, S3 shards": _time_reader("s3://bench/shards", args.workers, args.max_frames),
            "notebook, S3 .npy files": _time_notebook("s3://bench/raw", args.workers, args.batch_size),
        }
    print(f"\n{args.train} utterances, frames uniform in {args.frames}, {args.workers} loader workers")
    print(f"{'case':26} {'seconds':>8} {'frames/s':>10} {'padding eff.':>13}")
    speed = {}
    for case, (seconds, real, padded) in results.items():
        speed[case] = real / seconds
        print(f"{case:26} {seconds:8.2f} {speed[case]:10.0f} {real / padded:13.3f}")
    local, remote, notebook = speed.values()
    print(
        f"\nS3 / local = {remote / local:.2f} (target ≥ 0.8); S3 reader / notebook = {remote / notebook:.1f}x (target ≥ 20)"
    )


if __name__ == "__main__":
    main()

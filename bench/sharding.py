"""Throughput of `python -m pipeline`: 1 vs 2 workers, local disk vs the S3 server, vs a plain copy.

    .venv/bin/python -m bench.sharding [--train 3000] [--frames 200 1600]

Writes a random HW3P2-layout set (13-dim, lengths uniform in --frames), starts SeaweedFS on
loopback, and times each case end to end (scan, statistics, shards, manifests). The plain
copy moves the same raw files through the same file system client without any processing:
it is the ceiling. MB/s counts raw input bytes.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec

from tests.hw3p2_fixture import write_hw3p2
from tests.s3server import running_s3_server


def _pipeline(src: str, dst: str, workers: int, env: dict) -> float:
    command = [sys.executable, "-m", "pipeline", "--src", src, "--dst", dst, "--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def _copy_local(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copytree(src, dst)
    return time.perf_counter() - start


def _copy_s3(src: str, dst: str) -> float:
    """Read every raw file and write it back, 64 at a time, as the pipeline's client does."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    start = time.perf_counter()
    files = fs.find(src)
    for i in range(0, len(files), 64):
        contents = fs.cat(files[i : i + 64])
        fs.pipe({path.replace(src, dst, 1): data for path, data in contents.items()})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--frames", type=int, nargs=2, default=(200, 1600))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    counts = (args.train, args.train // 10, args.train // 10)
    raw = write_hw3p2(work / "raw", counts=counts, frames=tuple(args.frames), seed=0)
    utterances = sum(counts)
    megabytes = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 1e6
    print(f"data: {utterances} utterances, {megabytes:.0f} MB raw, frames uniform in {args.frames}")

    import os

    results: dict[str, float] = {}
    with running_s3_server(work / "s3") as server:
        env = os.environ | server.client_env()
        os.environ.update(server.client_env())
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bench")
        fs.put(str(raw), "bench/raw", recursive=True)
        results["plain copy, local"] = _copy_local(raw, work / "copy")
        results["plain copy, S3"] = _copy_s3("bench/raw", "bench/copy")
        for workers in (1, 2):
            results[f"pipeline local, {workers} worker(s)"] = _pipeline(
                str(raw), str(work / f"out{workers}"), workers, env
            )
            results[f"pipeline S3, {workers} worker(s)"] = _pipeline(
                "s3://bench/raw", f"s3://bench/out{workers}", workers, env
            )
    shutil.rmtree(work)

    print(f"\n{'case':32} {'seconds':>8} {'utt/s':>8} {'MB/s':>8}")
    for case, seconds in results.items():
        print(f"{case:32} {seconds:8.2f} {utterances / seconds:8.0f} {megabytes / seconds:8.1f}")
    speed = {case: utterances / seconds for case, seconds in results.items()}
    print("\nratios")
    for where in ("local", "S3"):
        one, two = speed[f"pipeline {where}, 1 worker(s)"], speed[f"pipeline {where}, 2 worker(s)"]
        print(
            f"  {where}: 2 workers / 1 worker = {two / one:.2f}x; 2 workers / plain copy = {two / speed[f'plain copy, {where}']:.2f}"
        )
    print(
        f"  S3 / local (2 workers) = "
        f"{speed['pipeline S3, 2 worker(s)'] / speed['pipeline local, 2 worker(s)']:.2f}"
    )


if __name__ == "__main__":
    main()

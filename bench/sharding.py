"""Throughput of `python -m pipeline`: local processes and a Dask cluster, local disk vs the S3 server,
vs a plain copy; and what the driver's own work costs per million utterances.

    .venv/bin/python -m bench.sharding [--train 3000] [--frames 200 1600] [--driver 1000000]
    .venv/bin/python -m bench.sharding --train 28539 --dev 2703 --test 2620   # train-clean-100's size
    .venv/bin/python -m bench.sharding --cases local-pool1 s3-cluster1 s3-cluster2   # only these cases

Writes a random HW3P2-layout set (13-dim, lengths uniform in --frames), starts SeaweedFS on
loopback, and times each case end to end (scan, statistics, shards, manifests): 1 and 2 local
worker processes, and a loopback Dask cluster (loopback/cluster.py: `dask scheduler` and
`dask worker --nworkers K --nthreads 1`) of 1 and 2 worker processes, its start not counted.
The plain copy moves the same raw files through the same file system client without any
processing: it is the ceiling. MB/s counts raw input bytes. Every case's dataset must be
byte-identical to the first one's (checked). The driver part times, in this process, what stays
on the driver whatever the cluster's size (merging --driver utterances' statistics in id order,
the length sort and shard plan, the manifest), with its memory.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import psutil

from loopback.cluster import dask_cluster
from loopback.s3 import running_s3_server
from pipeline.layout import SourceUtterance
from pipeline.scan import Scanned
from pipeline.synthetic import write_hw3p2
from pipeline.write import plan_shards
from shards.manifest import manifest_bytes, shard_name
from shards.sample import sample_key
from shards.stats import FeatureStats

STORES = {"local": "local", "s3": "S3"}
PLACEMENTS = {
    "pool1": "1 local process(es)",
    "pool2": "2 local process(es)",
    "cluster1": "cluster of 1",
    "cluster2": "cluster of 2",
}
CASES = ["copies", *(f"{store}-{placement}" for store in STORES for placement in PLACEMENTS)]


def _pipeline(src: str, dst: str, placement: list[str], env: dict) -> float:
    command = [sys.executable, "-m", "pipeline", "--src", src, "--dst", dst, *placement]
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


def _read_back(fs, files: list[str]) -> float:
    """The write pass's input read again, 64 files at a time (from S3, or from local copies)."""
    start = time.perf_counter()
    for i in range(0, len(files), 64):
        fs.cat(files[i : i + 64])
    return time.perf_counter() - start


def _dataset(fs, root: str) -> dict[str, str]:
    """Relative path → sha256 of every file a case wrote, which is then removed (the disk is finite)."""
    root = fs._strip_protocol(root)
    digests = {}
    for path in sorted(fs.find(root)):
        digests[path.removeprefix(root).lstrip("/")] = hashlib.sha256(fs.cat_file(path)).hexdigest()
    fs.rm(root, recursive=True)
    return digests


def _driver_cost(utterances: int, dim: int = 13) -> dict[str, float]:
    """Seconds (and MB) of the driver's own work for ``utterances`` scanned utterances."""
    rng = np.random.default_rng(0)
    before = psutil.Process().memory_info().rss
    scanned = [
        Scanned(
            source=SourceUtterance(
                "train", f"{k:08d}", "train", f"train/mfcc/{k:08d}.npy", None, True, False
            ),
            n_frames=int(n),
            dim=dim,
            n_phonemes=int(n) // 8,
            ctc_frames=int(n) // 8,
            digest=f"{k:064x}",
            stats=FeatureStats(int(n), rng.normal(size=dim), rng.uniform(1, 2, size=dim) * n),
        )
        for k, n in enumerate(rng.integers(200, 1600, size=utterances))
    ]
    memory_mb = (psutil.Process().memory_info().rss - before) / 1e6
    cost = {"scan results held (MB)": memory_mb}
    start = time.perf_counter()
    FeatureStats.pooled((s.stats for s in sorted(scanned, key=lambda s: s.source.id)), dim)
    cost["merge statistics in id order (s)"] = time.perf_counter() - start
    start = time.perf_counter()
    shards = plan_shards(scanned, 64e6)
    cost["length sort and shard plan (s)"] = time.perf_counter() - start
    start = time.perf_counter()
    rows, position = [], 0
    for number, members in enumerate(shards):
        for s in members:
            rows.append(
                {
                    "key": sample_key(position),
                    "id": s.source.id,
                    "shard": shard_name(number),
                    "n_frames": s.n_frames,
                    "n_phonemes": s.n_phonemes,
                }
            )
            position += 1
    manifest_bytes(rows)
    cost["manifest rows and Parquet (s)"] = time.perf_counter() - start
    return cost


def _print_ratios(speed: dict[str, float]) -> None:
    """Each ratio whose two cases ran: more workers, cluster vs pool, pool vs the plain copy."""
    comparisons = [
        ("2 / 1 local processes", "2 local process(es)", "1 local process(es)"),
        ("cluster 2 / 1", "cluster of 2", "cluster of 1"),
        ("cluster of 2 / 2 local processes", "cluster of 2", "2 local process(es)"),
        ("2 local / plain copy", "2 local process(es)", "plain copy"),
    ]
    print("\nratios (throughput)")
    for where in STORES.values():
        pipeline = {case: speed.get(f"pipeline {where}, {case}") for case in PLACEMENTS.values()}
        pipeline["plain copy"] = speed.get(f"plain copy, {where}")
        for label, top, bottom in comparisons:
            if pipeline[top] and pipeline[bottom]:
                print(f"  {where}: {label} = {pipeline[top] / pipeline[bottom]:.2f}x")
    if "write-pass input from S3" in speed:
        ratio = speed["write-pass input from a local copy"] / speed["write-pass input from S3"]
        print(f"  write-pass input: S3 / local copy = {ratio:.1f}x the time")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--dev", type=int, help="default: a tenth of --train")
    parser.add_argument("--test", type=int, help="default: a tenth of --train")
    parser.add_argument("--frames", type=int, nargs=2, default=(200, 1600))
    parser.add_argument("--driver", type=int, default=1_000_000, help="utterances for the driver's cost")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=CASES,
        help="what to time (default: all); copies = the plain copies and the write-pass reads",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    counts = (args.train, args.dev or args.train // 10, args.test or args.train // 10)
    raw = write_hw3p2(work / "raw", counts=counts, frames=tuple(args.frames), seed=0)
    utterances = sum(counts)
    megabytes = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 1e6
    print(
        f"data: {utterances} utterances, {megabytes:.0f} MB raw, frames uniform in {args.frames}", flush=True
    )

    results: dict[str, float] = {}
    datasets: dict[str, dict[str, str]] = {}
    with running_s3_server(work / "s3") as server:
        env = os.environ | server.client_env()
        os.environ.update(server.client_env())
        s3 = fsspec.filesystem("s3", skip_instance_cache=True)
        local = fsspec.filesystem("file")
        s3.mkdir("bench")
        s3.put(str(raw), "bench/raw", recursive=True)
        if "copies" in args.cases:
            results["plain copy, local"] = _copy_local(raw, work / "copy")
            results["plain copy, S3"] = _copy_s3("bench/raw", "bench/copy")
            results["write-pass input from S3"] = _read_back(s3, s3.find("bench/raw"))
            results["write-pass input from a local copy"] = _read_back(local, local.find(str(work / "copy")))

        def run(placement: str, options: list[str]) -> None:
            case = PLACEMENTS[placement]
            for store, src, dst, fs in (
                ("local", str(raw), str(work / placement), local),
                ("s3", "s3://bench/raw", f"s3://bench/{placement}", s3),
            ):
                if f"{store}-{placement}" not in args.cases:
                    continue
                where = STORES[store]
                results[f"pipeline {where}, {case}"] = _pipeline(src, dst, options, env)
                datasets[f"{where}, {case}"] = _dataset(fs, dst)
                print(f"  {where}, {case}: {results[f'pipeline {where}, {case}']:.1f} s", flush=True)

        for workers in (1, 2):
            run(f"pool{workers}", ["--workers", str(workers)])
        for processes in (1, 2):
            if any(case.endswith(f"-cluster{processes}") for case in args.cases):
                with dask_cluster(work / f"cluster-{processes}", None, processes=processes) as cluster:
                    run(f"cluster{processes}", ["--scheduler-file", str(cluster.scheduler_file)])
    shutil.rmtree(work)
    if datasets:
        first = next(iter(datasets.values()))
        assert all(d == first for d in datasets.values()), "a case wrote other bytes"

    print(f"\n{'case':44} {'seconds':>8} {'utt/s':>8} {'MB/s':>8}")
    for case, seconds in results.items():
        print(f"{case:44} {seconds:8.2f} {utterances / seconds:8.0f} {megabytes / seconds:8.1f}")
    if datasets:
        print(f"\nevery pipeline case wrote the same {len(first)} files, byte for byte")
    _print_ratios({case: utterances / seconds for case, seconds in results.items()})

    print(f"\ndriver's own work for {args.driver:,} utterances (this process, one core)")
    for part, value in _driver_cost(args.driver).items():
        print(f"  {part:40} {value:8.2f}")


if __name__ == "__main__":
    main()

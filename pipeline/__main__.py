"""``python -m pipeline --src SRC --dst DST [--workers N | --scheduler tcp://HOST:PORT | --scheduler-file FILE]
[--shard-mb M] [--stats URL [--accept-shift]]``."""

import argparse
import logging
import os
import sys

from pipeline.build import Settings, TooManyRejects, build
from shards import s3
from shards.errors import write_error_lines


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="HW3P2 folder (local or s3://) → normalised, length-sorted WebDataset shards.",
    )
    parser.add_argument("--src", required=True, help="URL of the HW3P2 folder (<split>/mfcc/*.npy ...)")
    parser.add_argument("--dst", required=True, help="URL to write the dataset to (local folder or s3://)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="local processes (default: all cores)"
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the tasks on this Dask scheduler's cluster instead",
    )
    cluster.add_argument(
        "--scheduler-file",
        metavar="FILE",
        help="or on the one `dask scheduler --scheduler-file FILE` started",
    )
    parser.add_argument("--shard-mb", type=float, default=Settings.shard_mb, help="target shard size in MB")
    parser.add_argument("--stats", help="URL of a stats.json to apply instead of computing one from train")
    parser.add_argument(
        "--accept-shift",
        action="store_true",
        help="use data whose features do not match --stats (another front end, already normalised) anyway",
    )
    parser.add_argument(
        "--max-rejects",
        type=float,
        default=Settings.max_reject_fraction,
        help="fail if more than this fraction of any split is rejected (default 0.05)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.shard_mb <= 0:
        parser.error("--workers must be ≥ 1 and --shard-mb > 0")
    if args.accept_shift and not args.stats:
        parser.error("--accept-shift only applies with --stats")
    return Settings(
        args.src,
        args.dst,
        args.workers,
        args.shard_mb,
        args.stats,
        args.max_rejects,
        args.accept_shift,
        args.scheduler,
        args.scheduler_file,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        summary = build(settings)
    except TooManyRejects as error:
        write_error_lines([f"too many rejects: {error}"])
        return 1
    except Exception as error:
        return s3.refused(error, [settings.src, settings.dst, settings.stats])
    print(f"done: {summary.line()} → {settings.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

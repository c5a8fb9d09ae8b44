"""``python -m shards plan URL --split S --world-size W --num-workers K --max-frames F --seed S --epoch E``

Prints an epoch plan as JSON without opening a shard: per rank its batches (lists of
utterance ids, in the order the rank's loader yields them), frames and padded frames;
overall padding efficiency and repeated utterances.
"""

import argparse
import json
import sys

from shards import s3
from shards.manifest import read_split_metadata
from shards.plan import DEFAULT_MAX_FRAMES, plan_epoch


def plan_document(args: argparse.Namespace) -> dict:
    index, rows = read_split_metadata(args.url, args.split)
    plan = plan_epoch(
        index,
        rows,
        world_size=args.world_size,
        num_workers=args.num_workers,
        max_frames=args.max_frames,
        seed=args.seed,
        epoch=args.epoch,
    )
    ranks = []
    for rank in range(args.world_size):
        batches = plan.rank_batches(rank)
        ranks.append(
            {
                "rank": rank,
                "frames": sum(b.frames for b in batches),
                "padded_frames": sum(b.padded_frames for b in batches),
                "batches": [[u.id for u in b.utterances] for b in batches],
                "repeated_batches": [i for i, b in enumerate(batches) if b.repeated],
            }
        )
    return {
        "split": args.split,
        "epoch": args.epoch,
        "seed": args.seed,
        "world_size": args.world_size,
        "num_workers": args.num_workers,
        "max_frames": args.max_frames,
        "utterances": len(rows),
        "batches_per_rank": plan.batches_per_rank,
        "padding_efficiency": round(plan.padding_efficiency(), 6),
        "repeated_utterances": plan.repeated_utterances(),
        "ranks": ranks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="print an epoch plan as JSON")
    plan.add_argument("url", help="dataset URL (local folder or s3://bucket/prefix)")
    plan.add_argument("--split", default="train")
    plan.add_argument("--world-size", type=int, default=1)
    plan.add_argument("--num-workers", type=int, default=0)
    plan.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES)
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--epoch", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        s3.check_access(args.url)  # credentials, bucket, endpoint: a clear answer before any object is read
        document = plan_document(args)
    except Exception as error:
        return s3.refused(error, [args.url])
    json.dump(document, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

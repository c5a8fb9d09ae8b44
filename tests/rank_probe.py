"""Run by `accelerate launch` in tests: one epoch of BatchStream on each rank, with a collective per batch.

Writes OUT/rank<r>.json with the world size it really got and the ids of every batch.
"""

import datetime
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from shards.reader import BatchStream


def main() -> None:
    url, out, num_workers, max_frames = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    # a short timeout turns a hang (ranks with unequal batch counts) into a failure
    timeout = InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=60))
    accelerator = Accelerator(cpu=True, kwargs_handlers=[timeout])
    stream = BatchStream(
        url,
        "train",
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=num_workers,
        max_frames=max_frames,
        seed=3,
    )
    batches = []
    for batch in stream:
        # every batch takes part in an all-reduce, as a gradient would
        accelerator.reduce(torch.tensor([float(batch.features.sum())]), reduction="sum")
        batches.append({"ids": batch.ids, "repeated": batch.repeated.tolist()})
    accelerator.wait_for_everyone()
    report = {"world_size": accelerator.num_processes, "rank": accelerator.process_index, "batches": batches}
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()

"""Run by `accelerate launch` in tests: the trainer's replica check on real ranks and a real collective.

``replica_probe.py same|diverge|buffer``: every rank builds the same small model; with ``diverge`` rank 1
moves one weight by one float32 step (what a missed gradient all-reduce leaves), with ``buffer`` one
BatchNorm running mean (what a rank's own last batch leaves under DDP). Each rank prints
``rank R of W: identical`` or ``rank R of W: <the check's error>`` (and exits 3).
"""

import sys
import types

import torch
from accelerate import Accelerator

from train.main import Trainer


def main() -> int:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(13, 16, 3), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 41))
    moved = {"diverge": model[2].weight.view(-1), "buffer": model[1].running_mean}.get(sys.argv[1])
    if moved is not None and rank == 1:
        with torch.no_grad():
            moved[7] = torch.nextafter(moved[7], torch.tensor(float("inf")))
    try:
        Trainer.check_replicas(types.SimpleNamespace(world=world), [model])
        line, status = f"rank {rank} of {world}: identical", 0
    except RuntimeError as error:
        line, status = f"rank {rank} of {world}: {error}", 3
    # one write: the launcher runs ranks unbuffered (-u), where print writes the text and its newline
    # apart, and two ranks' lines would interleave
    sys.stdout.write(line + "\n")
    accelerator.end_training()  # leaves the process group (gloo aborts a process that exits inside one)
    return status


if __name__ == "__main__":
    sys.exit(main())

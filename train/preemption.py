"""Coordinated preemption: a SIGTERM (cloud preemption, Kubernetes, torchrun stopping its workers)
or SIGUSR1 (Slurm's warning before a time limit) reaching any rank stops every rank at the same step.

Each rank only notes the signal; once per optimiser step the ranks all-reduce their notes (together
with rank 0's "a timed checkpoint is due", so they also agree on that), and if any rank was signalled
they all write one checkpoint at that step and exit with EXIT_PREEMPTED. A second signal exits at once.
"""

import logging
import os
import signal
import time

import torch
from accelerate import Accelerator

log = logging.getLogger("train.preemption")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was written; start the same command again to continue
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised out of the training loop after the preemption checkpoint is written."""


class PreemptionWatch:
    def __init__(self) -> None:
        self.signalled_at: float | None = None
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        if self.signalled_at is not None:  # the second one: no more waiting
            os._exit(128 + signum)
        self.signalled_at = time.monotonic()
        log.warning("%s received: checkpointing at the next step, then exiting", signal.Signals(signum).name)

    def agree(self, accelerator: Accelerator, checkpoint_due: bool) -> tuple[bool, bool]:
        """(some rank was signalled, rank 0 says a timed checkpoint is due), the same on every rank."""
        flags = torch.tensor(
            [float(self.signalled_at is not None), float(checkpoint_due and accelerator.is_main_process)],
            device=accelerator.device,
        )
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

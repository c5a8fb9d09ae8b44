"""Coordinated preemption: a SIGTERM (cloud preemption, Kubernetes, torchrun stopping its workers)
or SIGUSR1 (Slurm's warning before a time limit) reaching any rank stops every rank at the same step.

Each rank only notes the signal; once per optimiser step the ranks all-reduce their notes (together
with rank 0's "a timed checkpoint is due", so they also agree on that), and if any rank was signalled
they all write one checkpoint at that step and exit with EXIT_PREEMPTED. A second signal exits at once,
unless it is the first one's echo: the same signal within ECHO_S of it. Slurm's scancel (or a kill of
the process group) signals the launcher as well as the ranks, and torchrun's agent passes the signal
it got on to its workers, so each rank hears one stop twice, milliseconds apart.

The agreement never stalls a GPU: each step's flags are reduced and copied to the host behind that
step's work, and read one step later, by when they have long arrived, so every rank acts on the
flags of the step before (the same step on every rank, one step after the signal).
"""

import logging
import os
import signal
import time

import torch
from accelerate import Accelerator

from shards.reader import PREEMPTION_SIGNALS

log = logging.getLogger("train.preemption")

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was written; start the same command again to continue
SIGNALS = PREEMPTION_SIGNALS  # the loader's workers ignore them (shards/reader.py)
ECHO_S = 5.0  # the same signal again this soon after the first is its echo, not a second request


class Preempted(Exception):
    """Raised out of the training loop after the preemption checkpoint is written."""


class PreemptionWatch:
    def __init__(self) -> None:
        self.signalled_at: float | None = None
        self._first_signal: int | None = None
        self._flags: torch.Tensor | None = None  # the last call's reduced flags, on the host
        self._arrived: torch.cuda.Event | None = None  # marks their copy's arrival (CUDA)
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        now = time.monotonic()
        if self.signalled_at is not None:
            if signum == self._first_signal and now - self.signalled_at < ECHO_S:
                return  # the launcher passing on the stop this rank already heard
            os._exit(128 + signum)  # a second request: no more waiting
        self.signalled_at, self._first_signal = now, signum
        log.warning("%s received: checkpointing at the next step, then exiting", signal.Signals(signum).name)

    def agree(self, accelerator: Accelerator, checkpoint_due: bool) -> tuple[bool, bool]:
        """(some rank was signalled, rank 0 says a timed checkpoint is due) as of the previous call,
        the same on every rank; this call's flags are read by the next one."""
        previous = self._read_pending()
        flags = torch.tensor(
            [float(self.signalled_at is not None), float(checkpoint_due and accelerator.is_main_process)],
            device=accelerator.device,
        )
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        if not flags.is_cuda:
            self._flags = flags
            return previous
        if self._arrived is None:
            self._flags, self._arrived = torch.empty(2, pin_memory=True), torch.cuda.Event()
        self._flags.copy_(flags, non_blocking=True)  # to pinned memory, behind this step's work
        self._arrived.record()
        return previous

    def _read_pending(self) -> tuple[bool, bool]:
        if self._flags is None:
            return False, False
        if self._arrived is not None:
            self._arrived.synchronize()  # waits for the previous step's flags only, not for this step's work
        return bool(self._flags[0]), bool(self._flags[1])

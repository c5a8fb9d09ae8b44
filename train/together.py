"""Rank 0's object-store work, waited out by every rank together, in collectives that each last seconds.

Only rank 0 writes checkpoints and metrics, and a write retries an outage for up to ``io_deadline_s``.
Were the other ranks to wait for it in one collective (``wait_for_everyone``), that collective would
have to outlast every write rank 0 makes before joining it: at an epoch's end the checkpoint in flight
and then the metrics, ``2 × io_deadline_s`` and more; past the collective timeout NCCL's watchdog
aborts the waiting ranks (SIGABRT), and gloo fails them with an error that names no store.

:func:`on_rank_0` runs the work on a thread of rank 0 while every rank asks, every ``POLL_S``
seconds, in one small broadcast, whether it has ended: no collective waits longer than a poll, so the
collective timeout only has to cover what one rank does alone between two steps (a shard read, see
``train/resume.py``). When the work fails, every rank raises the same error, so every rank exits with
the same one-line reason.
"""

import threading
from collections.abc import Callable

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from shards.errors import UserError

POLL_S = 2.0


class FailedOnRank0(UserError):
    """Rank 0's work failed; on the other ranks, this carries its message as one line (the traceback
    of a bug is rank 0's to show)."""


def on_rank_0(
    accelerator: Accelerator, work: Callable[[], None], explain: Callable[[BaseException], str | None]
) -> None:
    """``work()`` on rank 0, every rank returning when it has ended. Its error is raised on every rank:
    the exception itself on rank 0, elsewhere a :class:`FailedOnRank0` with the line rank 0 will
    print for it (``explain(error)``: the command's one line for an error a user can act on, None
    for a bug, which the others then name by its type)."""
    if accelerator.num_processes == 1:
        work()
        return
    failure: list[BaseException] = []
    thread = None
    if accelerator.is_main_process:
        thread = threading.Thread(target=_catching(work, failure), name="rank 0's store work")
        thread.start()
    while True:
        if thread is not None:
            thread.join(POLL_S)
        status = [None if thread is None or thread.is_alive() else _message(failure, explain)]
        broadcast_object_list(status, from_process=0)  # the only collective while rank 0 works
        if status[0] is None:
            continue
        if failure:
            raise failure[0]
        if status[0]:
            raise FailedOnRank0(status[0])
        return


def _message(failure: list[BaseException], explain: Callable[[BaseException], str | None]) -> str:
    """Empty for success, else the error's line (never empty: the other ranks read "" as success)."""
    if not failure:
        return ""
    error = failure[0]
    return explain(error) or f"rank 0 failed: {type(error).__name__}: {error}"


def _catching(work: Callable[[], None], failure: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except BaseException as error:  # handed to the caller's thread, which raises it
            failure.append(error)

    return run

"""Transient I/O failures retried with exponential backoff and jitter, up to a deadline.

Object stores drop connections and go away for minutes (a restart, a network partition); a
shard read or a checkpoint write should wait that out rather than end a run. Transient means: an
OSError other than "not found" or "denied" (s3fs reports most failures so), or botocore's
connection and timeout errors (an unreachable endpoint is one of those, not an OSError). Each
retry is logged once with the URL and the error; past the deadline the last error is raised,
wrapped in an OSError naming the URL and how long it was tried.
"""

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import botocore.exceptions

log = logging.getLogger("shards.retry")

IO_DEADLINE_S = 300.0  # how long an outage is waited out by default
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 30.0
T = TypeVar("T")


class StillFailing(OSError):
    """A transient failure that outlasted the deadline; the message names the URL and how long it was tried."""

    def __init__(self, url: str, waited_s: float, reason: str):
        super().__init__(f"{url}: still failing after {waited_s:.0f} s of retries: {reason}")
        self.url, self.waited_s, self.reason = url, waited_s, reason

    def __reduce__(self):  # rebuilt from its parts when a loader worker sends it
        return StillFailing, (self.url, self.waited_s, self.reason)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    transient = (
        OSError,
        botocore.exceptions.ConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
    )
    return isinstance(error, transient)


def with_retries(action: Callable[[], T], url: str, deadline_s: float = IO_DEADLINE_S) -> T:
    """``action()``, retried on transient failures until ``deadline_s`` seconds have passed."""
    started = time.monotonic()
    delay = FIRST_DELAY_S
    while True:
        try:
            return action()
        except Exception as error:
            waited = time.monotonic() - started
            if not is_transient(error):
                raise
            if waited + delay > deadline_s:
                raise StillFailing(url, waited, str(error)) from error
            pause = delay * random.uniform(0.5, 1.0)  # jitter: ranks and workers do not retry in step
            log.warning("%s: %s: %s; retrying in %.1f s", url, type(error).__name__, error, pause)
            time.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_S)

"""Where the pipeline's tasks run: this process, a local process pool, or a Dask cluster.

One mechanism, three ways to get it: the build hands a :class:`TaskRunner` its task functions and
their jobs, and gets the results back in job order, whoever ran them.

- ``--workers 1``: in this process (what the tests and a debugger want);
- ``--workers N``: a ``concurrent.futures.ProcessPoolExecutor`` of N spawned processes on this machine;
- ``--scheduler tcp://HOST:PORT`` or ``--scheduler-file FILE``: Dask distributed's executor
  (``Client.get_executor()``), whose workers may be on other machines. A lost worker's tasks are
  re-run elsewhere by Dask; every task is deterministic and publishes atomically, so a task run
  twice writes the same bytes twice and a reader never sees a partial file.

Each task gets the source and destination URLs and opens them itself (:func:`worker_state`),
once per worker thread, so that workers need nothing from the driver but the URLs: both must be
URLs every worker reaches (S3, or a file system they share).
"""

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial

import botocore.exceptions
import fsspec

from shards import s3
from shards.errors import UserError

log = logging.getLogger("pipeline")

CLUSTER_WAIT_S = 60.0  # a cluster with no worker after this long is an error, not a hang


class ClusterError(UserError):
    """The Dask cluster cannot be reached, or has no worker."""


class WorkerFailed(UserError):
    """A task failed on a cluster worker: the message names the worker and the problem (with its URL)."""


class TaskRunner:
    """Maps ``function(src, dst, job)`` over jobs: on the cluster a scheduler address or file names,
    else in ``workers`` local processes; results in job order."""

    def __init__(
        self,
        src: str,
        dst: str,
        workers: int = 1,
        scheduler: str | None = None,
        scheduler_file: str | None = None,
    ):
        self.src, self.dst = _absolute(src), _absolute(dst)  # a worker's working folder is not the driver's
        self.throttled_elsewhere = 0  # 503 SlowDown answers that tasks in other processes got
        self._client = None
        self._executor: Executor | None = None
        if scheduler is not None or scheduler_file is not None:
            self._client = _connect(scheduler, scheduler_file)
            self._executor = self._client.get_executor()
            self.workers = len(self._client.scheduler_info(n_workers=-1)["workers"])
            log.info("cluster %s: %d worker(s)", self._client.scheduler.address, self.workers)
        elif workers > 1:
            # spawn, not fork: fsspec's async clients do not survive a fork
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(workers, mp_context=context)
            self.workers = workers
        else:
            self.workers = 1

    def map(self, function: Callable, jobs: Iterable) -> Iterator:
        task = partial(function, self.src, self.dst)
        if self._client is not None:
            task = partial(_naming_the_worker, task, [self.src, self.dst])
        if self._executor is None:
            return map(task, jobs)  # here: what it counts is this process's own count
        return self._results(self._executor.map(partial(_counting_throttling, task), jobs))

    def _results(self, counted: Iterator[tuple[object, int]]) -> Iterator:
        for result, throttled in counted:
            self.throttled_elsewhere += throttled
            yield result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


def _counting_throttling(task: Callable, job) -> tuple[object, int]:
    """``task(job)`` and the 503 SlowDown answers its S3 clients got meanwhile."""
    before = s3.throttled()
    result = task(job)
    return result, s3.throttled() - before


def _naming_the_worker(task: Callable, urls: list[str], job):
    """``task(job)`` on a cluster worker; an I/O or pipeline failure comes back naming the worker,
    since the same URL may work from the driver and fail from one machine (its network, its keys).
    Explained here, with the worker's own settings (its endpoint), and raised without its causes:
    the driver must not explain it again with its own."""
    try:
        return task(job)
    except (UserError, OSError, botocore.exceptions.BotoCoreError) as error:  # a bug keeps its traceback
        from distributed import get_worker

        problem = s3.explain(error, urls) or str(s3.carried(error))
        failure = WorkerFailed(f"on worker {get_worker().address}: {problem}")
    raise failure


def _absolute(url: str) -> str:
    """A local path made absolute; other URLs as they are."""
    protocol, path = fsspec.core.split_protocol(url)
    return os.path.abspath(path) if protocol in (None, "file") else url


def _connect(scheduler: str | None, scheduler_file: str | None):
    from distributed import Client  # the cluster's client only where a cluster is asked for

    where = scheduler or f"the scheduler in {scheduler_file}"
    try:
        client = Client(scheduler, scheduler_file=scheduler_file, timeout=CLUSTER_WAIT_S)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(f"cannot reach the Dask scheduler at {where}: {error}") from None
    try:
        client.wait_for_workers(1, timeout=CLUSTER_WAIT_S)
    except TimeoutError:
        client.close()
        raise ClusterError(
            f"the Dask cluster at {where} has no worker after {CLUSTER_WAIT_S:.0f} s"
        ) from None
    return client


_local = threading.local()


def worker_state(src: str, dst: str, make: Callable):
    """``make(src, dst)``, made once per worker thread and pair of URLs (a Dask worker may run many threads)."""
    key = (src, dst, make)
    cache = _local.__dict__.setdefault("states", {})
    if key not in cache:
        cache[key] = make(src, dst)
    return cache[key]

"""A Dask cluster on 127.0.0.1 as a user starts one: ``dask scheduler`` and ``dask worker`` processes.

Every server it starts (scheduler, nannies, workers, their dashboards) is bound to loopback; used
by tests/test_cluster.py and bench/sharding.py.

    with dask_cluster(folder, None, None) as cluster:   # two worker commands, default environment
        ... --scheduler-file cluster.scheduler_file, or --scheduler cluster.address
"""

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from loopback.processes import launched

BIN = Path(sys.executable).parent
LOOPBACK = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]


class Cluster(NamedTuple):
    scheduler_file: Path
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]  # one `dask worker` command each (a nanny and its worker process)

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]


@contextlib.contextmanager
def dask_cluster(folder: Path, *workers: dict[str, str] | None, processes: int = 1) -> Iterator[Cluster]:
    """A scheduler and one ``dask worker`` command per entry of ``workers`` (its extra environment,
    or None), each of ``processes`` worker processes of one thread; yields once all have joined."""
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    command = [
        str(BIN / "dask"),
        "scheduler",
        *LOOPBACK,
        "--port",
        "0",
        "--scheduler-file",
        str(scheduler_file),
    ]
    with contextlib.ExitStack() as stack:
        scheduler = stack.enter_context(launched(command, output=folder / "scheduler.log", cwd=folder))
        started = []
        for k, extra in enumerate(workers):
            command = [str(BIN / "dask"), "worker", *LOOPBACK, "--scheduler-file", str(scheduler_file)]
            command += [
                "--nworkers",
                str(processes),
                "--nthreads",
                "1",
                "--local-directory",
                str(folder / f"w{k}"),
            ]
            env = {**os.environ, **(extra or {})}
            started.append(stack.enter_context(launched(command, output=folder / f"worker-{k}.log", env=env)))
        _wait_for_workers(scheduler_file, len(workers) * processes)
        yield Cluster(scheduler_file, scheduler, started)


def _wait_for_workers(scheduler_file: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not scheduler_file.exists():
        assert time.monotonic() < deadline, "the scheduler wrote no scheduler file"
        time.sleep(0.2)
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout=timeout) as client:
        client.wait_for_workers(count, timeout=timeout)

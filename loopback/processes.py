"""Servers and launchers started as their users start them, and ended with everything they started."""

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil


@contextlib.contextmanager
def launched(command: list[str], output: Path | None = None, **options) -> Iterator[subprocess.Popen]:
    """``command`` in a process group of its own, output captured (in ``process.stdout``, or in the
    file ``output`` for a server that talks more than a pipe holds); whatever it started is killed
    when the block ends, so a failed or timed-out test leaves no ranks or servers behind (torchrun
    starts each rank in a session of its own: they are found as descendants, not by group)."""
    with contextlib.ExitStack() as files:
        stdout = subprocess.PIPE if output is None else files.enter_context(open(output, "w"))
        process = subprocess.Popen(
            command, start_new_session=True, stdout=stdout, stderr=subprocess.STDOUT, text=True, **options
        )
    try:
        yield process
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            for descendant in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    descendant.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

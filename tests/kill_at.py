"""Run a Python script that kill -9s itself at a chosen file-system step under a folder.

``python tests/kill_at.py FOLDER WHEN SCRIPT [ARGS...]`` runs SCRIPT as ``__main__``. Each audit
event that opens, creates, renames or removes a path under FOLDER is one step, numbered from 0.
WHEN ``K`` sends the process SIGKILL just before step K happens; ``K+`` just after it (as its call
returns: a file opened for writing then exists and holds nothing yet). So a test lands a kill in
every window between two steps on purpose instead of by timing. WHEN ``-1`` kills nothing: each
step is printed on stderr as ``kill_at: step K: EVENT PATH`` (EVENT ``open-write`` for an open that
may create or change the file) and their number last, as ``kill_at: S steps``.
"""

import os
import runpy
import signal
import sys

EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

folder, when, script = os.path.abspath(sys.argv[1]) + os.sep, sys.argv[2], sys.argv[3]
at, after = int(when.rstrip("+")), when.endswith("+")
steps = 0


def _under_folder(path: object) -> bool:
    if not isinstance(path, str | bytes | os.PathLike):
        return False  # a file descriptor
    return os.path.abspath(os.fsdecode(path)).startswith(folder)


def _kill(*_) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _name(event: str, args: tuple) -> str:
    if event != "open":
        return event
    mode, flags = args[1] or "", args[2] or 0
    return "open-write" if set(mode) & set("wax+") or flags & WRITE_FLAGS else "open-read"


def _hook(event: str, args: tuple) -> None:
    global steps
    if event not in EVENTS or not any(_under_folder(arg) for arg in args[:2]):
        return
    if at < 0:
        print(f"kill_at: step {steps}: {_name(event, args)} {os.fsdecode(args[0])}", file=sys.stderr)
    elif steps == at and after:
        sys.setprofile(_kill)  # the first profiler event is this step's call returning
    elif steps == at:
        _kill()
    steps += 1


sys.argv = [script, *sys.argv[4:]]
sys.path[0] = os.path.dirname(os.path.abspath(script))
sys.addaudithook(_hook)
try:
    runpy.run_path(script, run_name="__main__")
finally:
    if at < 0:
        print(f"kill_at: {steps} steps", file=sys.stderr)

"""kill -9 at a chosen file-system step, in any Python process of a command (tests' deterministic kills).

Imported at start-up by every Python process that has this folder on ``PYTHONPATH`` (``site``
imports ``sitecustomize``), so a command's worker processes carry the hook too. With
``KILLPOINT_FOLDER`` set, each audit event that opens, creates, renames or removes a path under that
folder is a step, numbered from 0 in each process, and ``KILLPOINT`` says when the command's whole
process group gets SIGKILL:

- ``K``: just before this process's step K; ``K+``: just after it (as its call returns: a file
  opened for writing then exists and holds nothing yet). For one-process commands.
- ``after EVENT GLOB`` / ``before EVENT GLOB``: around the first EVENT (``os.rename``, ``open-write``,
  ...) on a path matching GLOB, in whichever process makes it.
- ``list``: nothing is killed; each step is printed on stderr as ``killpoint: step K: EVENT PATH``
  (``open-write`` for an open that may create or change the file, ``open-read`` otherwise), and
  their number at exit as ``killpoint: S steps``.

The command must lead a process group of its own (``start_new_session``), which is what is killed;
tests start it through ``tests.conftest.run_killed``.
"""

import atexit
import fnmatch
import os
import signal
import sys

EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _event_name(event: str, args: tuple) -> str:
    if event != "open":
        return event
    mode, flags = args[1] or "", args[2] or 0
    return "open-write" if set(mode) & set("wax+") or flags & WRITE_FLAGS else "open-read"


def _paths(args: tuple) -> list[str]:
    return [os.path.abspath(os.fsdecode(a)) for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]


def _install(folder: str, when: str, group: int) -> None:
    steps = 0

    def kill(*_) -> None:
        os.killpg(group, signal.SIGKILL)

    def is_trigger(step: int, name: str, paths: list[str]) -> bool:
        if when[0].isdigit():
            return step == int(when.rstrip("+"))
        _, event, pattern = when.split(" ", 2)
        return name == event and any(fnmatch.fnmatch(path, pattern) for path in paths)

    def hook(event: str, args: tuple) -> None:
        nonlocal steps
        if event not in EVENTS:
            return
        paths = [path for path in _paths(args) if path.startswith(folder)]
        if not paths:
            return
        name = _event_name(event, args)
        if when == "list":
            print(f"killpoint: step {steps}: {name} {paths[0]}", file=sys.stderr, flush=True)
        elif is_trigger(steps, name, paths):
            if when.endswith("+") or when.startswith("after "):
                sys.setprofile(kill)  # the first profiler event is this step's call returning
            else:
                kill()
        steps += 1

    if when == "list":
        atexit.register(lambda: print(f"killpoint: {steps} steps", file=sys.stderr, flush=True))
    sys.addaudithook(hook)


def _start() -> None:
    folder, when = os.environ.get("KILLPOINT_FOLDER"), os.environ.get("KILLPOINT", "list")
    if not folder:
        return
    group = int(os.environ.setdefault("KILLPOINT_GROUP", str(os.getpgrp())))  # the first process's group
    if group != os.getpgid(0) or (os.environ.get("KILLPOINT_GROUP_CHECKED") is None and group != os.getpid()):
        sys.exit("killpoint: the command must lead a process group of its own (start_new_session=True)")
    os.environ["KILLPOINT_GROUP_CHECKED"] = "1"
    _install(os.path.abspath(folder) + os.sep, when, group)


_start()

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import fsspec
import psutil
import pytest

from shards import manifest, sample
from shards.manifest import SplitIndex
from tests.s3server import free_port, running_s3_server
from train import checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on loopback for the whole session; clients find it via the environment."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        saved = {key: os.environ.get(key) for key in server.client_env()}
        os.environ.update(server.client_env())
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket: ``s3://<name>``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


def read_index(url: str, split: str) -> SplitIndex:
    with fsspec.open(f"{url}/{split}/{manifest.INDEX}", "rb") as handle:
        return SplitIndex.from_json(handle.read(), url)


def read_split(url: str, split: str) -> list[tuple[str, sample.Utterance]]:
    """Every (key, utterance) of a split, in shard order, read with tarfile (independently of the writer)."""
    found = []
    for entry in read_index(url, split).shards:
        with fsspec.open(f"{url}/{split}/{entry.name}", "rb") as handle:
            data = handle.read()
        members: dict[str, dict[str, bytes]] = defaultdict(dict)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                key, extension = member.name.split(".", 1)
                members[key][extension] = archive.extractfile(member).read()
        found += [(key, sample.decode(parts, f"{entry.name} sample {key}")) for key, parts in members.items()]
    return found


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path → content of every file under a local root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def s3_tree_bytes(url: str) -> dict[str, bytes]:
    """Relative key → content of every object under an ``s3://`` prefix (``tree_bytes`` of a bucket)."""
    fs = fsspec.filesystem("s3")
    root = url.removeprefix("s3://").rstrip("/")
    return {path.removeprefix(root + "/"): fs.cat_file(path) for path in sorted(fs.find(root))}


def kill_when(command: list[str], ready, timeout: float = 300) -> None:
    """Start ``command`` and kill -9 its whole process group as soon as ``ready()`` holds."""
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the command finished before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting to interrupt the command"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_killed(
    command: list[str], folder: Path, when: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``command`` killed -9 (its whole process group) at the file-system step ``when`` under
    ``folder`` (tests/killpoint/sitecustomize.py says how steps are named); ``when="list"`` runs it
    whole and prints its steps on stderr."""
    env = {**os.environ, "KILLPOINT_FOLDER": str(folder), "KILLPOINT": when}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "tests" / "killpoint"), env.get("PYTHONPATH")])
    )
    return subprocess.run(
        command, env=env, start_new_session=True, capture_output=True, text=True, timeout=timeout
    )


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


def accelerate_command(
    script: list[str], processes: int = 2, *launch_options: str, port: int | None = None
) -> list[str]:
    """``accelerate launch`` of ``script`` (path and arguments) in ``processes`` ranks with the shipped
    accelerate_config.yaml, as `make train RANKS=N` does: on a machine without a GPU the scripts ask
    for gloo CPU ranks (``--cpu`` or a MULTI_CPU config would silently run one process)."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(REPO / "accelerate_config.yaml"), "--num_processes", str(processes)]
    return command + ["--main_process_port", str(port or free_port()), *launch_options, *script]


_FAILURE_LINE = re.compile(
    r"Error|Exception|what\(\)|terminate|[Ss]ignal|[Aa]bort|Traceback|FAILED|exitcode|Root Cause"
)


def pipeline_command(src: Path | str, dst: Path | str, *options: str) -> list[str]:
    """``python -m pipeline --src SRC --dst DST OPTIONS...``."""
    return [sys.executable, "-m", "pipeline", "--src", str(src), "--dst", str(dst), *options]


def why_failed(output: str, tail: int = 1500) -> str:
    """What a failed multi-process run printed about its failure: every rank's error lines (a
    rank's abort can sit far above the launcher's summary), then the end of the output."""
    lines = [line for line in output.splitlines() if _FAILURE_LINE.search(line)]
    return "\n".join(["error lines:", *lines[:60], f"last {tail} characters:", output[-tail:]])


def accelerate_launch(script: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(accelerate_command(script, processes), capture_output=True, text=True, timeout=600)


def training_state(step: int, weights: dict | None = None) -> checkpoint.TrainingState:
    """A minimal state.pt for checkpoint-writing tests."""
    return checkpoint.TrainingState(weights or {}, {}, {}, {}, {}, [], step, 0.0, None, [], [], 1, {}, {})

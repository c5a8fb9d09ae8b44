"""Commands as tests run them: in process groups of their own, killed at a moment or a file-system
step, launched as ranks; and what a failed one printed about its failure."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from loopback.ports import free_port

REPO = Path(__file__).resolve().parents[1]


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


def started_ranks(log: str) -> list[tuple[int, int]]:
    """(rank, world size) of every process that started, from eval's per-rank start-up line."""
    return sorted((int(r), int(w)) for r, w in re.findall(r" eval: rank (\d+) of (\d+) on ", log))


def evaluation_command(trained: tuple, *extra: str) -> list[str]:
    """``eval/main.py`` on the ``trained`` fixture's model and data, with ``extra`` arguments."""
    data, model, _ = trained
    return [str(REPO / "eval" / "main.py"), "--checkpoint", model, "--data", data, *extra]


def evaluated(trained: tuple, *extra: str) -> subprocess.CompletedProcess:
    """``evaluation_command`` run in this Python, output captured."""
    return subprocess.run(
        [sys.executable, *evaluation_command(trained, *extra)], capture_output=True, text=True
    )


def greedy_dev_row(checkpoint: str, data: str, *extra: str) -> dict:
    """The leaderboard row of ``eval evaluate`` on the dev split, greedy, no loader process."""
    command = [sys.executable, "-m", "eval", "evaluate", "--checkpoint", checkpoint, "--data", data]
    command += ["--split", "dev", "--beam", "1", "--num-workers", "0", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, why_failed(result.stderr)
    return json.loads(result.stdout.splitlines()[-1])


TORCH_IMPORTED = 97  # the exit status of :func:`eval_command` when torch was imported where it must not be
_WITHOUT_TORCH = f"""
import sys
from eval.cli import main
status = main(sys.argv[1:])
if "torch" in sys.modules:
    print("error: torch was imported", file=sys.stderr)
    sys.exit({TORCH_IMPORTED})
sys.exit(status)
"""


def eval_command(*argv: str, without_torch: bool = False) -> subprocess.CompletedProcess:
    """``python -m eval ARGV`` in a fresh interpreter, output captured; ``without_torch``: its exit
    status is TORCH_IMPORTED when torch was imported by then."""
    interpreter = [sys.executable, "-c", _WITHOUT_TORCH] if without_torch else [sys.executable, "-m", "eval"]
    return subprocess.run([*interpreter, *argv], capture_output=True, text=True, cwd=REPO, timeout=600)


def export_model(out: Path, *checkpoints: str | Path, format: str = "onnx") -> Path:
    """``python -m eval export`` of ``checkpoints`` (several: an ensemble) to ``out``."""
    given = [a for checkpoint in checkpoints for a in ("--checkpoint", str(checkpoint))]
    result = eval_command("export", *given, "--format", format, "--out", str(out))
    assert result.returncode == 0, why_failed(result.stderr)
    assert json.loads(result.stdout.splitlines()[-1])["out"] == str(out)
    return out

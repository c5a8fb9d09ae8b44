"""Which checkpoint a run continues from, decided once for every rank, and the rules that let ranks
on several machines share one run folder.

- Rank 0 alone reads OUT's latest.json and applies ``--resume``; its answer (the state.pt URL, none,
  or the refusal) reaches every rank in one broadcast, so the ranks all continue from the same
  checkpoint or all start fresh, even if latest.json changes meanwhile.
- A local OUT (a path, not a URL) shared by several ranks: rank 0 writes a probe file there and every
  rank looks for it. A rank that does not see it runs on a machine whose OUT is another folder
  (node-local disk): refused up front, before anyone trains, instead of only machine 0 resuming.
- ``--timeout`` must cover what one rank does alone between two collectives: a shard read retried
  for up to ``io_deadline_s`` while the other ranks wait in the step's all-reduce (a shorter
  collective timeout would abort them, NCCL's watchdog: SIGABRT, instead of a clean exit 2). Rank
  0's checkpoint and metrics writes are not part of it: every rank waits them out together, in
  collectives of seconds each (``train/together.py``), however many follow each other.
"""

import secrets
import socket
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from train import checkpoint

TIMEOUT_MARGIN_S = 60  # beyond io_deadline_s: the read attempt in flight when the deadline passes
PROBE = ".shared-run-folder-probe"


def check_timeout(timeout_s: float, io_deadline_s: float) -> None:
    if timeout_s < io_deadline_s + TIMEOUT_MARGIN_S:
        raise checkpoint.CheckpointError(
            f"--timeout {timeout_s:g} s must be at least io_deadline_s ({io_deadline_s:g} s) + "
            f"{TIMEOUT_MARGIN_S} s: a rank may wait that long for the object store (a shard read) while "
            "the other ranks wait in a collective; raise --timeout or lower io_deadline_s"
        )


def _local_folder(out: str) -> Path | None:
    if "://" in out and not out.startswith("file://"):
        return None
    return Path(out.removeprefix("file://"))


def check_shared(out: str, accelerator: Accelerator) -> None:
    """Every rank sees the same local OUT folder (no-op for object storage and one rank)."""
    folder = _local_folder(out)
    if folder is None or accelerator.num_processes == 1:
        return
    token = [secrets.token_hex(8) if accelerator.is_main_process else None]
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{PROBE}-{token[0]}").write_text(socket.gethostname())
    broadcast_object_list(token, from_process=0)
    probe = folder / f"{PROBE}-{token[0]}"
    answers = gather_object([(accelerator.process_index, socket.gethostname(), probe.exists())])
    accelerator.wait_for_everyone()  # everyone has looked before the probe goes
    if accelerator.is_main_process:
        probe.unlink()
    blind = [f"rank {rank} on {host}" for rank, host, saw in answers if not saw]
    if blind:
        raise checkpoint.CheckpointError(
            f"{out}: a local folder that {', '.join(blind)} cannot see (node-local storage): with "
            "several machines, OUT must be storage every machine sees (s3://bucket/run or a shared "
            "file system mounted at the same path)"
        )


def decide(out: str, mode: str, accelerator: Accelerator) -> str | None:
    """The state.pt URL every rank continues from, or None for a fresh run; ``mode`` is --resume.
    Whatever rank 0 meets (a refusal, an unreachable store) every rank raises, none waits."""
    answer: list = [("fresh", None)]
    failure = None
    if accelerator.is_main_process:
        try:
            found = checkpoint.has_checkpoint(out)
            if found and mode == "never":
                raise checkpoint.CheckpointError(f"{out}: holds a checkpoint and --resume never refuses it")
            if found or mode == "must":  # for must without one: the error naming what is missing
                answer = [("resume", checkpoint.latest(out, "state.pt"))]
        except Exception as error:
            failure, answer = error, [("refused", str(error))]
    broadcast_object_list(answer, from_process=0)
    kind, value = answer[0]
    if failure is not None:
        raise failure
    if kind == "refused":
        raise checkpoint.CheckpointError(value)
    return value

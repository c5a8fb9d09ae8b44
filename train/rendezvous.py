"""Joining the process group so that torchrun's restarts (`accelerate launch --max_restarts N`) work.

torchrun's static rendezvous, which `accelerate launch` uses, keeps one TCPStore for the whole job and
hands it to every restarted worker group with no per-attempt prefix (torch 2.13's env:// rendezvous
assumes a new store per restart, which the static rendezvous does not make). The gloo/NCCL bootstrap
keys of the dead group stay in it, so a restarted rank can read its peer's *old* address: the connect
is refused (that group fails and uses up a restart) or reaches a port some new process now holds and
waits forever. Measured on 2 gloo ranks beside a CPU hog, kill -9 of one rank with --max_restarts 3:
1 run in 9 exhausted its restarts and 1 in 9 hung. Joining through a store prefixed with the restart
count gives every attempt keys of its own.
"""

import datetime
import os

import torch


def join_process_group(timeout: datetime.timedelta, cuda: bool) -> None:
    """Initialise the default process group (NCCL on GPUs, gloo on CPUs: what Accelerate picks for the
    same device) with per-attempt store keys when torchrun's agent hosts the store; otherwise leave it
    to Accelerate (one process, or a launcher without restarts)."""
    if torch.distributed.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    agent_store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    torch.distributed.init_process_group(
        backend="nccl" if cuda else "gloo",
        store=torch.distributed.PrefixStore(f"restart-{attempt}", agent_store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
    )

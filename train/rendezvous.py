"""Joining the process group so that torchrun's restarts (`accelerate launch --max_restarts N`) work,
on one machine or several.

torchrun's agents keep one TCPStore for the whole job (the static rendezvous's, or since torch 2.5
the c10d rendezvous's shared store) and hand it to every restarted worker group. The gloo/NCCL
bootstrap keys of a dead group stay in it, so a restarted rank that joins under the same keys can
read its peer's *old* address: the connect is refused, or reaches a port some new process now holds
and waits forever. Each attempt needs keys of its own, and every machine must agree on them.

``TORCHELASTIC_RESTART_COUNT`` cannot name the attempt: it is counted per machine, and a membership
change (the c10d rendezvous restarting a healthy machine's workers because another machine's died)
is not counted at all. Measured with two launchers as two machines: after kill -9 of machine 1's
worker, machine 0's restarted worker saw 0 and machine 1's saw 1, and both waited for each other
until killed (pytorch/pytorch#135712 is the same fault in torch's own env:// rendezvous).

So the workers agree on a *generation* through the store itself (:func:`agree_on_generation`):
each takes the seat of its rank in the lowest generation that no one has given up; finding its seat
already taken (by a worker of an earlier attempt) it gives that generation up for everyone. A
generation is agreed when all its seats are taken and confirmed and no one gave it up. A seat is
taken by one atomic compare-and-set, so two workers never hold one; a confirmation is written only
once every seat is taken, so an earlier attempt's confirmations exist only in generations whose
seats are all taken, which every new worker gives up.
"""

import datetime
import os
import secrets
import time

import torch

from shards.errors import UserError

PREFIX = "hw3p2-join"  # the agreement's own keys, beside torchrun's in the agent's store
POLL_S = 0.02


class JoinTimeout(UserError, RuntimeError):
    """The other workers of this attempt did not all arrive within the collective timeout."""


def _seat(generation: int, rank: int) -> str:
    return f"generation-{generation}/seat-{rank}"


def _confirmed(generation: int, rank: int) -> str:
    return f"generation-{generation}/confirmed-{rank}"


def _given_up(generation: int) -> str:
    return f"generation-{generation}/given-up"


def agree_on_generation(store, rank: int, world_size: int, timeout: datetime.timedelta) -> int:
    """The generation every worker of this attempt joins under: the same number on every machine,
    never one an earlier attempt's group used. ``store`` is shared by all workers of all attempts."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + timeout.total_seconds()
    generation = 0
    while True:
        if (
            store.check([_given_up(generation)])
            or store.compare_set(_seat(generation, rank), "", token) != token.encode()
        ):
            store.set(_given_up(generation), "1")  # taken by an earlier attempt: nobody joins here
            generation += 1
            continue
        if _wait_for_seats_then_confirm(store, generation, rank, world_size, deadline):
            return generation
        generation += 1


def _wait_for_seats_then_confirm(store, generation: int, rank: int, world_size: int, deadline: float) -> bool:
    """True once every seat of ``generation`` is taken and confirmed; False as soon as someone gives it up."""
    seats = [_seat(generation, r) for r in range(world_size)]
    confirmations = [_confirmed(generation, r) for r in range(world_size)]
    confirmed = False
    while True:
        if store.check([_given_up(generation)]):
            return False
        if not confirmed and store.check(seats):
            store.set(_confirmed(generation, rank), "1")
            confirmed = True
        if confirmed and store.check(confirmations) and not store.check([_given_up(generation)]):
            return True
        if time.monotonic() > deadline:
            raise JoinTimeout(
                f"rank {rank}: the other {world_size - 1} workers of this attempt did not all arrive "
                f"within the collective timeout (generation {generation})"
            )
        time.sleep(POLL_S)


def join_process_group(timeout: datetime.timedelta, cuda: bool) -> None:
    """Initialise the default process group (NCCL on GPUs, gloo on CPUs: what Accelerate picks for the
    same device) under the keys of an agreed generation when torchrun's agent hosts the store;
    otherwise leave it to Accelerate (one process, or a launcher without restarts)."""
    if torch.distributed.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    agent_store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    join_store = torch.distributed.PrefixStore(PREFIX, agent_store)
    generation = agree_on_generation(join_store, rank, world_size, timeout)
    torch.distributed.init_process_group(
        backend="nccl" if cuda else "gloo",
        store=torch.distributed.PrefixStore(f"generation-{generation}", agent_store),
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )

"""train/rendezvous.py: the workers of one attempt agree on a generation of rendezvous keys through the
job's store, the same on every machine and never one an earlier attempt used, whatever each
machine's restart count says."""

import datetime
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch.distributed as dist

from train.rendezvous import JoinTimeout, agree_on_generation

TIMEOUT = datetime.timedelta(seconds=20)  # threads on an in-memory store agree in milliseconds
pytestmark = pytest.mark.timeout(60, method="thread")  # an agreement that never ends ends the process:
# its workers are threads, which no signal stops


def _attempt(store, world_size: int, ranks: list[int] | None = None, timeout=TIMEOUT) -> list[int]:
    """Every worker of one attempt (threads, as the workers of several machines), each with its own
    client of the shared store; the generation each returned."""
    ranks = list(range(world_size)) if ranks is None else ranks
    with ThreadPoolExecutor(len(ranks)) as pool:
        futures = [pool.submit(agree_on_generation, store, rank, world_size, timeout) for rank in ranks]
        return [future.result() for future in futures]


@pytest.fixture
def store():
    return dist.HashStore()


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_a_first_attempt_agrees_on_generation_0(store, world_size):
    assert _attempt(store, world_size) == [0] * world_size


def test_each_restart_after_an_agreed_attempt_takes_a_new_generation(store):
    assert _attempt(store, 2) == [0, 0]
    assert _attempt(store, 2) == [1, 1]
    assert _attempt(store, 2) == [2, 2]


def test_an_attempt_that_died_before_agreeing_is_given_up_by_the_next(store):
    """A worker of the dead attempt took its seat of generation 0 and its peer never came: the
    restarted workers both give generation 0 up and meet in generation 1, whichever arrives first."""
    with pytest.raises(JoinTimeout, match=r"rank 0: the other 1 workers .* \(generation 0\)"):
        agree_on_generation(store, 0, 2, datetime.timedelta(seconds=0.2))
    assert _attempt(store, 2, ranks=[1, 0]) == [1, 1]


def test_machines_whose_restart_counts_differ_still_meet(store):
    """c10d restarts a healthy machine's workers without counting it: what matters is the store, so
    after two agreed attempts and one that only rank 1 reached, everyone meets in the first generation
    nobody has used."""
    _attempt(store, 2)
    _attempt(store, 2)
    with pytest.raises(JoinTimeout):
        agree_on_generation(store, 1, 2, datetime.timedelta(seconds=0.2))
    assert _attempt(store, 2) == [3, 3]


def test_a_worker_whose_peers_never_come_times_out_naming_its_rank(store):
    started = time.monotonic()
    with pytest.raises(JoinTimeout, match=r"^rank 2: the other 3 workers of this attempt did not all arrive"):
        agree_on_generation(store, 2, 4, datetime.timedelta(seconds=0.5))
    assert time.monotonic() - started >= 0.5  # it waited the whole timeout first

"""shards/retry.py: transient failures waited out with doubling, jittered pauses up to a deadline; the rest at once.

The clock is the test's: ``time.monotonic`` and ``time.sleep`` are replaced by a clock that only moves
when slept on, so the pauses and the deadline are checked exactly, in no time."""

import inspect
import logging
import pickle

import botocore.exceptions
import pytest

from shards import retry
from shards.retry import StillFailing, is_transient, with_retries

URL = "s3://bucket/run/checkpoints/epoch-0003"


class Clock:
    def __init__(self):
        self.now, self.pauses = 3.0, []  # small: a clock read as a remainder of the start would show

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(retry.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(retry.time, "sleep", clock.sleep)
    return clock


def _failing(errors: list[BaseException], result: str = "done"):
    calls = []

    def action() -> str:
        calls.append(len(calls))
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return action, calls


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection reset"),
        ConnectionResetError(),
        TimeoutError(),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_outages_are_transient(error):
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(),
        PermissionError(),
        IsADirectoryError(),
        NotADirectoryError(),
        ValueError(),
        KeyError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_answers_and_bugs_are_not(error):
    assert not is_transient(error)


def test_a_transient_failure_is_retried_after_a_doubling_jittered_pause_and_each_is_logged(clock, caplog):
    action, calls = _failing([OSError("reset")] * 4)
    with caplog.at_level(logging.WARNING, logger="shards.retry"):
        assert with_retries(action, URL) == "done"
    assert len(calls) == 5
    # jitter: each pause is between half and all of its delay (0.5, 1, 2, 4 s)
    for pause, delay in zip(clock.pauses, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert delay / 2 <= pause <= delay
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4 and all(line.startswith(f"{URL}: OSError: reset; retrying in ") for line in lines)
    assert lines[0].endswith(f"{clock.pauses[0]:.1f} s")


def test_the_pause_stops_doubling_at_its_cap(clock, monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)  # no jitter: the delays themselves
    action, _ = _failing([OSError("down")] * 9)
    with_retries(action, URL, deadline_s=10_000)
    assert clock.pauses == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_failure_that_is_not_transient_is_raised_at_once(clock):
    action, calls = _failing([PermissionError("denied")])
    with pytest.raises(PermissionError):
        with_retries(action, URL)
    assert len(calls) == 1 and clock.pauses == []


def test_past_the_deadline_the_last_error_is_raised_naming_the_url_and_the_time_tried(clock, monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    errors = [OSError(f"outage {n}") for n in range(20)]
    action, calls = _failing(errors)
    with pytest.raises(StillFailing) as failed:
        with_retries(action, URL, deadline_s=10)
    # pauses 0.5 + 1 + 2 + 4 = 7.5 s; the next (8 s) would pass 10 s, so the fifth failure is the last
    assert clock.pauses == [0.5, 1, 2, 4] and len(calls) == 5
    assert str(failed.value) == f"{URL}: still failing after 8 s of retries: outage 4"
    assert failed.value.__cause__ is errors[4] and isinstance(failed.value, OSError)


def test_a_pause_that_ends_exactly_at_the_deadline_is_still_taken(clock, monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    action, calls = _failing([OSError("outage")] * 5)
    assert with_retries(action, URL, deadline_s=15.5) == "done"  # 0.5 + 1 + 2 + 4 + 8 = 15.5
    assert clock.pauses == [0.5, 1, 2, 4, 8] and len(calls) == 6


def test_an_outage_is_waited_out_for_five_minutes_by_default():
    """The default docs/design.md and docs/reliability.md state, and io_deadline_s's."""
    assert inspect.signature(with_retries).parameters["deadline_s"].default == 300


def test_still_failing_crosses_a_process_boundary_whole():
    """A loader worker pickles its error to its rank; the rank must print the same line."""
    error = StillFailing(URL, 301.4, "connection refused")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is StillFailing and str(back) == str(error)
    assert (back.url, back.waited_s, back.reason) == (URL, 301.4, "connection refused")

"""Progress: a bar on a terminal, a few log lines elsewhere, nothing on ranks that do not show it."""

import io
import logging

from shards import progress


def _run(caplog, terminal: bool, shown: bool, monkeypatch) -> str:
    stderr = io.StringIO()
    stderr.isatty = lambda: terminal  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    bar = progress.Progress(4, "scan train", "utt", done=1, shown=shown, every_s=0)
    with caplog.at_level(logging.INFO, logger="progress"), bar:
        for loss in ("0.9", "0.8", "0.7"):
            bar.update(1, {"loss": loss})
    return stderr.getvalue()


def test_off_a_terminal_it_logs_lines_with_the_figures_and_draws_no_bar(caplog, monkeypatch):
    drawn = _run(caplog, terminal=False, shown=True, monkeypatch=monkeypatch)
    assert drawn == ""
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("scan train: 2/4 utt, ") and lines[0].endswith(", loss 0.9, ETA 0 s")
    assert lines[-1].startswith("scan train: 4/4 utt, ") and "loss 0.7" in lines[-1]
    assert " utt/s, " in lines[0]  # fast loops: a rate; slow ones: seconds each


def test_on_a_terminal_it_draws_a_bar_and_logs_nothing(caplog, monkeypatch):
    drawn = _run(caplog, terminal=True, shown=True, monkeypatch=monkeypatch)
    assert "scan train" in drawn and "4/4" in drawn and "loss=0.7" in drawn
    assert caplog.records == []


def test_a_rank_that_does_not_show_it_is_silent(caplog, monkeypatch):
    for terminal in (False, True):
        assert _run(caplog, terminal=terminal, shown=False, monkeypatch=monkeypatch) == ""
    assert caplog.records == []


def _lines(
    monkeypatch,
    caplog,
    times: list[float],
    total: int,
    steps: list,
    name: str = "scan",
    figures=None,
    **options,
) -> list[str]:
    """The log lines of one Progress off a terminal, on a clock that reads ``times`` in turn; each
    step is ``update(n)``, or ``update()`` for None."""
    stderr = io.StringIO()
    stderr.isatty = lambda: False  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    clock = iter(times)
    monkeypatch.setattr("shards.progress.time.monotonic", lambda: next(clock))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="progress"):
        counted = progress.Progress(total, name, "utt", **options)
        for n in steps:
            counted.update() if n is None else counted.update(n, figures)
    return [r.getMessage() for r in caplog.records]


def test_a_line_every_every_s_with_the_exact_rate_and_eta(caplog, monkeypatch):
    """A clock the test moves: lines exactly when every_s has passed, rate and ETA from the resumed start."""
    slow = _lines(
        monkeypatch,
        caplog,
        [0.0, 10.0, 15.0, 29.0, 45.0],
        10,
        [1, 1, 3, 3],
        name="decode",
        figures={"per": "6%"},
        done=2,
        every_s=15,
    )
    # at 15 s: 2 done since the start (4 of 10), 7.5 s each, 6 to go; at 45 s: 8 done, 5.6 s each
    assert slow == [
        "decode: 4/10 utt, 7.5 s/utt, per 6%, ETA 45 s",
        "decode: 10/10 utt, 5.6 s/utt, per 6%, ETA 0 s",
    ]
    fast = _lines(monkeypatch, caplog, [0.0, 10.0], 100, [50], name="scan train", every_s=5)
    assert fast == ["scan train: 50/100 utt, 5.0 utt/s, ETA 10 s"]


def test_the_default_cadence_is_30_s_and_the_edge_rates_read_right(monkeypatch, caplog):
    # the README's "a log line every 30 seconds": none at 29.9 s, one at 30 s (update() counts one)
    assert _lines(monkeypatch, caplog, [0.0, 29.9, 30.0], 10, [None, None]) == [
        "scan: 2/10 utt, 15.0 s/utt, ETA 120 s"
    ]
    # exactly one a second is "utt/s"; 1.5 a second too; an ETA of 23.67 s rounds to 24
    assert _lines(monkeypatch, caplog, [0.0, 10.0], 100, [10], every_s=5) == [
        "scan: 10/100 utt, 1.0 utt/s, ETA 90 s"
    ]
    assert _lines(monkeypatch, caplog, [0.0, 10.0], 100, [15], every_s=5) == [
        "scan: 15/100 utt, 1.5 utt/s, ETA 57 s"
    ]
    assert _lines(monkeypatch, caplog, [0.0, 10.0], 101, [30], every_s=5) == [
        "scan: 30/101 utt, 3.0 utt/s, ETA 24 s"
    ]
    # nothing done yet, or no time passed: a line all the same, never a division by zero
    assert _lines(monkeypatch, caplog, [0.0, 10.0], 10, [0], every_s=5) == [
        "scan: 0/10 utt, 1000000000.0 s/utt, ETA inf s"
    ]
    assert _lines(monkeypatch, caplog, [5.0, 5.0], 10, [4], every_s=0) == [
        "scan: 4/10 utt, 4000000000.0 utt/s, ETA 0 s"
    ]

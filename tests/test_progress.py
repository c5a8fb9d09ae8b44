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

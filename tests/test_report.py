"""train/report.py: OUT/metrics.csv and OUT/curves.png, rewritten from the whole history each epoch."""

import pytest

from shards.store import Store
from train.report import COLUMNS, publish, read_metrics


def _row(epoch: int, averaged: bool) -> dict:
    row = {"epoch": epoch, "step": 10 * (epoch + 1), "train_loss": 3.0 - epoch, "train_utterances": 48}
    row |= {"dev_distance": 40.0 - epoch, "dev_per": 0.5, "dev_blank_share": 0.9, "dev_empty_share": 0.1}
    row |= {"lr": 0.002, "frames_per_s": 1000.0, "elapsed_s": 5.0 * (epoch + 1)}
    if averaged:
        row |= {"dev_distance_averaged": 41.0 - epoch, "dev_per_averaged": 0.51}
    return row


@pytest.mark.parametrize("averaged", [False, True])
def test_the_history_is_read_back_row_for_row_in_the_documented_columns(tmp_path, averaged):
    history = [_row(0, averaged), _row(1, averaged)]
    publish(Store(str(tmp_path)), history)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.split(",") == COLUMNS
    rows = read_metrics(str(tmp_path) + "/")  # a trailing slash names the same run
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert rows[1]["dev_distance"] == "39.0" and rows[1]["elapsed_s"] == "10.0"
    # a run that does not average leaves the averaged columns empty
    assert rows[1]["dev_distance_averaged"] == ("40.0" if averaged else "")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_no_column_holds_is_refused_not_dropped(tmp_path):
    with pytest.raises(ValueError, match="dev_wer"):
        publish(Store(str(tmp_path)), [_row(0, False) | {"dev_wer": 0.1}])
    assert not (tmp_path / "metrics.csv").exists()


def test_publishing_again_replaces_both_files_whole(tmp_path):
    store = Store(str(tmp_path))
    publish(store, [_row(0, False), _row(1, False), _row(2, False)])
    first_png = (tmp_path / "curves.png").read_bytes()
    publish(store, [_row(0, False)])
    assert len(read_metrics(str(tmp_path))) == 1
    assert (tmp_path / "curves.png").read_bytes() != first_png
    # no temporaries left beside them or in the store's staging folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".staging") == ["curves.png", "metrics.csv"]
    assert not any((tmp_path / ".staging").iterdir())


@pytest.mark.parametrize("averaged", [False, True])
def test_the_curves_show_the_averaged_weights_beside_the_live_ones_when_the_run_averages(
    tmp_path, monkeypatch, averaged
):
    drawn = {}

    def keep(figure) -> bytes:
        loss, distance = figure.axes
        drawn["loss"] = [list(line.get_ydata()) for line in loss.get_lines()]
        drawn["distance"] = {line.get_label(): list(line.get_ydata()) for line in distance.get_lines()}
        return b"png"

    monkeypatch.setattr("train.report.figure_png", keep)
    publish(Store(str(tmp_path)), [_row(0, averaged), _row(1, averaged)])
    assert drawn["loss"] == [[3.0, 2.0]]
    assert drawn["distance"] == (
        {"live": [40.0, 39.0], "averaged": [41.0, 40.0]} if averaged else {"live": [40.0, 39.0]}
    )

"""What people look at during a run: OUT/metrics.csv (a row per epoch) and OUT/curves.png."""

import csv
import io

import fsspec
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shards.store import Store  # noqa: E402

COLUMNS = [
    "epoch",
    "step",
    "train_loss",
    "train_utterances",
    "dev_distance",
    "dev_per",
    "dev_blank_share",  # of the greedy paths' output frames (train/monitor.py's blank alarm)
    "dev_empty_share",  # of the dev utterances: decoded to nothing
    "dev_distance_averaged",  # of train/average.py's weights (empty when the run does not average)
    "dev_per_averaged",
    "lr",
    "frames_per_s",
    "elapsed_s",
]


def publish(store: Store, history: list[dict]) -> None:
    """Rewrite metrics.csv and curves.png from the whole history (both atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    store.publish_bytes(text.getvalue().encode(), "metrics.csv")
    store.publish_bytes(_curves_png(history), "curves.png")


def read_metrics(run_url: str) -> list[dict]:
    """The run's metrics.csv, a dict of strings per epoch."""
    with fsspec.open(f"{run_url.rstrip('/')}/metrics.csv", "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def _curves_png(history: list[dict]) -> bytes:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, distance_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_axis.set(title="training CTC loss", xlabel="epoch", ylabel="loss")
    distance_axis.plot(
        epochs, [row["dev_distance"] for row in history], marker="o", color="tab:red", label="live"
    )
    if any("dev_distance_averaged" in row for row in history):
        averaged = [row.get("dev_distance_averaged") for row in history]
        distance_axis.plot(epochs, averaged, marker="s", color="tab:purple", label="averaged")
        distance_axis.legend()
    distance_axis.set(title="dev mean Levenshtein distance (greedy)", xlabel="epoch", ylabel="distance")
    for axis in (loss_axis, distance_axis):
        axis.grid(alpha=0.3)
    return figure_png(figure)


def figure_png(figure: plt.Figure) -> bytes:
    """PNG bytes of a finished figure, which is then closed."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()

"""The leaderboard shown: ``python -m eval leaderboard URL`` prints it ranked, best first; with
``--html FILE`` (and ``eval watch --html``) it is also one static page.

Self-contained so that it opens offline and from object storage alike: inline CSS, the curves as
an embedded PNG, no scripts, fonts or links to fetch (its Content-Security-Policy allows none).
It holds the ranked table (each run's best row per split), every run's dev distance per epoch
from the run folder's metrics.csv, and the whole history, newest first. Every value is escaped:
run names and paths are user input. Published atomically, like the CSV.
"""

import argparse
import base64
import dataclasses
import datetime
import html
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eval import leaderboard  # noqa: E402
from eval.model import run_folder  # noqa: E402
from eval.options import Url, request_of  # noqa: E402
from shards.store import publish_at  # noqa: E402
from train.report import figure_png, read_metrics  # noqa: E402

log = logging.getLogger("eval.page")

RANKED = [
    "split",
    "rank",
    "run",
    "epoch",
    "parameters",
    "beam",
    "lm",
    "alpha",
    "beta",
    "per",
    "distance",
    "public_distance",
    "private_distance",
    "gap",  # private − public: how much the public board flattered the run
    "rejected",
    "time",
]
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.first td { font-weight: 600; }
div.wide { overflow-x: auto; }
"""
NUMBERS = {
    "rank",
    "epoch",
    "step",
    "parameters",
    "beam",
    "alpha",
    "beta",
    "per",
    "distance",
    "public_distance",
    "private_distance",
    "gap",
    "utterances",
    "rejected",
    "decode_seconds",
}


def best_per_run(rows: list[dict]) -> list[dict]:
    """Each (run, split)'s best row (lowest distance; where none is scored, the newest), with its
    rank within the split; splits in name order."""
    best: dict[tuple[str, str], dict] = {}
    for row in sorted(rows, key=lambda r: r["time"], reverse=True):  # newest first: wins unscored ties
        key = (row["run"], row["split"])
        if key not in best or leaderboard.standing(row) < leaderboard.standing(best[key]):
            best[key] = row
    ranked = leaderboard.ranked(list(best.values()))
    ranks: dict[str, int] = {}
    placed = []
    for row in sorted(ranked, key=lambda r: r["split"]):  # stable: ranked order within a split
        ranks[row["split"]] = ranks.get(row["split"], 0) + 1
        placed.append({**row, "rank": str(ranks[row["split"]]), "gap": _gap(row)})
    return placed


def _gap(row: dict) -> str:
    public, private = row.get("public_distance"), row.get("private_distance")
    return f"{float(private) - float(public):+.4f}" if public and private else ""


def curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Run name → (epoch, dev distance) from its folder's metrics.csv, for runs that have one."""
    found = {}
    for row in sorted(rows, key=lambda r: r["time"]):
        if row["run"] in found or not row["checkpoint"] or leaderboard.MEMBERS in row["checkpoint"]:
            continue  # an ensemble has no curve of its own
        folder = run_folder(row["checkpoint"])
        try:
            history = read_metrics(folder)
            found[row["run"]] = [
                (int(h["epoch"]), float(h["dev_distance"])) for h in history if h.get("dev_distance")
            ]
        except (OSError, ValueError, KeyError) as error:  # a deleted or damaged run: its rows still count
            log.warning("%s: no curve (%s)", folder, error)
    return {run: points for run, points in found.items() if points}


def curves_png(per_run: dict[str, list[tuple[int, float]]]) -> bytes:
    with plt.rc_context({"text.parse_math": False}):  # a run name with $ is text, not TeX
        figure, axis = plt.subplots(figsize=(8, 4))
        for run, points in sorted(per_run.items()):
            axis.plot([e for e, _ in points], [d for _, d in points], marker="o", markersize=3, label=run)
        axis.set(title="dev mean Levenshtein distance (greedy) per epoch", xlabel="epoch", ylabel="distance")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        return figure_png(figure)


def _cell(column: str, value: str) -> str:
    if column == "per" and value:
        value = f"{float(value):.3%}"
    css = ' class="number"' if column in NUMBERS else ""
    return f"<td{css}>{html.escape(value)}</td>"


def _table(table_id: str, columns: list[str], rows: list[dict], first_of: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        css = ' class="first"' if first_of and row[first_of] == "1" else ""
        body.append(f"<tr{css}>" + "".join(_cell(c, row[c]) for c in columns) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render(rows: list[dict], source: str) -> str:
    """The page for ``rows`` (leaderboard.read's), ``source`` the CSV it came from."""
    per_run = curves(rows)
    picture = (
        '<img alt="dev distance per epoch of each run" src="data:image/png;base64,'
        + base64.b64encode(curves_png(per_run)).decode()
        + '">'
        if per_run
        else "<p>No run folder with a metrics.csv was found.</p>"
    )
    history = sorted(rows, key=lambda r: r["time"], reverse=True)
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">',
            f"<title>Leaderboard: {html.escape(source)}</title><style>{STYLE}</style></head><body>",
            "<h1>Leaderboard</h1>",
            f"<p>{html.escape(source)} · evaluations: {len(rows)} · page written {generated}</p>",
            "<h2>Best of each run</h2>",
            _table("ranked", RANKED, best_per_run(rows), first_of="rank"),
            "<h2>Dev distance per epoch</h2>",
            picture,
            "<h2>Every evaluation, newest first</h2>",
            f'<div class="wide">{_table("history", leaderboard.COLUMNS, history)}</div>',
            "</body></html>",
            "",
        ]
    )


def publish(board: str, url: str) -> None:
    """Render the leaderboard CSV at ``board`` and publish the page at ``url``."""
    publish_at(url, render(leaderboard.read(board), board).encode())


@dataclasses.dataclass(frozen=True)
class Board:
    url: str
    html: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", type=Url)
    parser.add_argument(
        "--html", type=Url, help="also write the board as a self-contained page here (local or URL)"
    )


def run(args: argparse.Namespace) -> int:
    request = request_of(Board, args)
    rows = leaderboard.ranked(leaderboard.read(request.url))
    columns = [c for c in leaderboard.COLUMNS if c not in ("time", "checkpoint", "step")] + ["time"]
    print(" ".join(f"{c:>14}" for c in ["rank", *columns]))
    for rank, row in enumerate(rows, start=1):
        print(" ".join(f"{v:>14}" for v in [str(rank), *(str(row[c]) for c in columns)]))
    if request.html:
        publish(request.url, request.html)
        print(f"page: {request.html}")
    return 0

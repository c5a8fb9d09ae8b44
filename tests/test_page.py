"""The leaderboard page: its tables match the CSV, every value is escaped, nothing is fetched."""

import base64
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from eval import leaderboard
from shards.store import Store
from train import report

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<script>alert("x")</script> & =HYPERLINK("http://x") $a^b$'


class PageReader(HTMLParser):
    """Tables (id → rows of cell texts), every tag's attributes, and the text of <script> tags."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[tuple[str, dict]] = []
        self.table: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self.table = attributes["id"]
            self.tables[self.table] = []
        elif tag == "tr":
            self.tables[self.table].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[self.table][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _row(run: str, split: str, epoch: int, distance: str, time: str, folder: Path) -> dict:
    checkpoint = f"{folder}/checkpoints/epoch-{epoch:04d}/model.pt"
    cells = {"run": run, "split": split, "epoch": str(epoch), "distance": distance, "time": time}
    cells |= {"checkpoint": checkpoint, "per": str(float(distance) / 100) if distance else "", "beam": "50"}
    return {c: cells.get(c, "") for c in leaderboard.COLUMNS}


def _write_board(tmp_path: Path) -> tuple[str, list[dict]]:
    runs = {
        "small": tmp_path / "runs" / "small",
        HOSTILE: tmp_path / "runs" / "hostile",
        "gone": tmp_path / "x",
    }
    for name, folder in runs.items():
        if name != "gone":  # a run folder deleted since: its rows count, it has no curve
            history = [{"epoch": e, "train_loss": 1.0, "dev_distance": 20.0 - e} for e in range(3)]
            report.publish(Store(str(folder)), history)
    rows = [
        _row("small", "dev", 0, "19.5", "2026-01-01T00:00:00", runs["small"]),
        _row("small", "dev", 2, "17.25", "2026-01-01T00:02:00", runs["small"]),
        _row("small", "test", 2, "", "2026-01-01T00:03:00", runs["small"]),
        _row(HOSTILE, "dev", 1, "15.0", "2026-01-01T00:04:00", runs[HOSTILE]),
        _row(HOSTILE, "dev", 2, "16.0", "2026-01-01T00:05:00", runs[HOSTILE]),
        _row("gone", "dev", 0, "30.0", "2026-01-01T00:06:00", runs["gone"]),
    ]
    board = str(tmp_path / "board.csv")
    for row in rows:
        leaderboard.append(board, row)
    return board, rows


def test_the_page_shows_each_runs_best_row_the_history_and_curves_and_fetches_nothing(tmp_path):
    board, rows = _write_board(tmp_path)
    page = tmp_path / "site" / "board.html"
    command = [sys.executable, "-m", "eval", "leaderboard", board, "--html", str(page)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    reader = PageReader()
    reader.feed(page.read_text())
    ranked, history = reader.tables["ranked"], reader.tables["history"]
    # Invariant: the best (lowest distance) row of each run and split, ranked within its split
    header = ranked[0]
    shown = [dict(zip(header, cells, strict=True)) for cells in ranked[1:]]
    assert [(r["split"], r["rank"], r["run"], r["epoch"], r["distance"]) for r in shown] == [
        ("dev", "1", HOSTILE, "1", "15.0"),
        ("dev", "2", "small", "2", "17.25"),
        ("dev", "3", "gone", "0", "30.0"),
        ("test", "1", "small", "2", ""),
    ]
    assert shown[0]["per"] == "15.000%"
    # Invariant: the history is every CSV row, newest first, each cell as read back from the CSV
    assert history[0] == leaderboard.COLUMNS
    as_shown = [
        {**row, "per": f"{float(row['per']):.3%}" if row["per"] else ""} for row in leaderboard.read(board)
    ]
    assert history[1:] == [[row[c] for c in leaderboard.COLUMNS] for row in reversed(as_shown)]
    assert len(history) - 1 == len(rows)
    # Invariant: user input is text, never markup; nothing is fetched, nothing runs
    assert not [tag for tag, _ in reader.tags if tag in ("script", "iframe", "object", "link", "base")]
    references = [
        value
        for _, attributes in reader.tags
        for name, value in attributes.items()
        if name in ("src", "href")
    ]
    assert references and all(value.startswith("data:image/png;base64,") for value in references)
    assert base64.b64decode(references[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert not [
        attributes for _, attributes in reader.tags if any(name.startswith("on") for name in attributes)
    ]
    assert not list(page.parent.glob(".staging/*"))  # published atomically, nothing left staged
    # Invariant: the page's own policy lets a browser fetch and run nothing (an injected tag would be inert too):
    # it comes first in <head>, defaults every kind to 'none', and allows only inline styles and data: images
    policies = [
        attributes["content"]
        for tag, attributes in reader.tags
        if tag == "meta" and attributes.get("http-equiv") == "Content-Security-Policy"
    ]
    assert len(policies) == 1 and [tag for tag, _ in reader.tags][:3] == ["html", "head", "meta"]
    directives = {name: sources for name, *sources in (d.split() for d in policies[0].split(";"))}
    assert directives.pop("default-src") == ["'none'"]
    assert directives == {"img-src": ["data:"], "style-src": ["'unsafe-inline'"]}

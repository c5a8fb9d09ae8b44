"""One-factor ablations: ``python -m train.ablate --config BASE --data URL --out URL --vary key=v1,v2 ...``.

The course's advice is to vary one thing at a time. This runs the base configuration once and
then each value of each ``--vary`` key with everything else at the base, as ordinary training
runs under ``OUT/<name>/`` (``base``, ``lstm_dropout=0.1``, ...; a run with a checkpoint is
continued, a finished one skipped), then writes ``OUT/ablation.csv`` (best and final dev
distance, PER, time) and ``OUT/ablation.png`` (a bar chart of the best dev distance).
"""

import argparse
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shards import s3  # noqa: E402
from shards.errors import UserError
from shards.store import Store  # noqa: E402
from train.config import load_config  # noqa: E402
from train.report import figure_png, read_metrics  # noqa: E402

MAIN = Path(__file__).resolve().parent / "main.py"
COLUMNS = [
    "run",
    "varied",
    "value",
    "best_dev_distance",
    "best_epoch",
    "final_dev_distance",
    "dev_per_at_best",
    "elapsed_s",
]


def parse_vary(text: str) -> tuple[str, list[str]]:
    """``key=v1,v2`` → (key, [v1, v2]); commas inside brackets belong to a value (``strides=[1,2],[2,2]``)."""
    key, sep, values = text.partition("=")
    if not sep or not values:
        raise UserError(f"--vary {text!r}: expected key=value1,value2,...")
    return key, [v.strip() for v in re.split(r",(?![^\[]*\])", values) if v.strip()]


def runs(base: list[str], varied: list[tuple[str, list[str]]]) -> list[tuple[str, str, str, list[str]]]:
    """(name, key, value, overrides) of the base run and of each one-factor variation."""
    planned = [("base", "", "", list(base))]
    for key, values in varied:
        planned += [(f"{key}={value}", key, value, [*base, f"{key}={value}"]) for value in values]
    return planned


def _summary(name: str, key: str, value: str, history: list[dict]) -> dict:
    best = min(history, key=lambda row: float(row["dev_distance"]))
    return {
        "run": name,
        "varied": key,
        "value": value,
        "best_dev_distance": float(best["dev_distance"]),
        "best_epoch": int(best["epoch"]),
        "final_dev_distance": float(history[-1]["dev_distance"]),
        "dev_per_at_best": float(best["dev_per"]),
        "elapsed_s": float(history[-1]["elapsed_s"]),
    }


def _chart(rows: list[dict]) -> bytes:
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    colours = ["tab:gray" if row["run"] == "base" else "tab:blue" for row in rows]
    axis.barh([row["run"] for row in rows], [row["best_dev_distance"] for row in rows], color=colours)
    axis.axvline(rows[0]["best_dev_distance"], color="tab:gray", linestyle="--", linewidth=1)
    axis.invert_yaxis()
    axis.set(xlabel="best dev mean Levenshtein distance (lower is better)", title="one-factor ablation")
    return figure_png(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the base YAML configuration")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="folder URL for the runs, ablation.csv and ablation.png")
    parser.add_argument("--vary", action="append", default=[], help="key=v1,v2 (repeatable)")
    parser.add_argument(
        "--launcher", default=sys.executable, help="command that runs train/main.py, e.g. 'accelerate launch'"
    )
    parser.add_argument("base", nargs="*", help="key=value settings shared by every run")
    args = parser.parse_args(argv)
    try:
        varied = [parse_vary(text) for text in args.vary]
        for _, _, _, overrides in runs(args.base, varied):
            load_config(args.config, overrides)  # every variation is valid before anything runs
    except Exception as error:
        return s3.refused(error, [args.data, args.out])
    out = args.out.rstrip("/")
    rows = []
    for name, key, value, overrides in runs(args.base, varied):
        run_url = f"{out}/{name}"
        command = [*args.launcher.split(), str(MAIN), "--data", args.data, "--out", run_url]
        command += ["--config", args.config] if args.config else []  # a finished run resumes to itself
        print(f"ablation run {name}: {' '.join(overrides) or '(base settings)'}", flush=True)
        subprocess.run([*command, *overrides], check=True)
        rows.append(_summary(name, key, value, read_metrics(run_url)))
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    store = Store(out)
    store.publish_bytes(text.getvalue().encode(), "ablation.csv")
    store.publish_bytes(_chart(rows), "ablation.png")
    print(text.getvalue(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The best model a run gives: one checkpoint, averaged checkpoints, averaged weights, ensembles.

    .venv/bin/python -m bench.best_model --run demo/run-s0-ema --run demo/run-s1-cum --run demo/run-s2 \\
        [--data demo/shards] [--solution demo/corpus/test_solution.csv] \\
        [--lm demo/lm/phones-3.arpa --alpha 0.1 --beta 0.5] [--out demo/best-model] [--only 'ensemble of 3']

For the first run: its best epoch (lowest dev distance of its live weights), its last, the mean of
its last 3 and last 5 epoch checkpoints (where it keeps that many) (``python -m eval average --weights live``), and its
averaged weights (the run's ``average`` setting, EMA or cumulative); for every other run its own
averaged weights where it averaged; for every other run its last epoch and its averaged weights;
then ensembles of the first 2 and of all runs' last live weights, combined both ways. Each is decoded at beam 50 (with the LM too, given one) on the dev
split, on the test split scored against the solution (Kaggle's public and private boards), and on
the two voices ``bench.unseen_voices`` synthesises; every row goes to ``<out>/leaderboard.csv`` and
the table is printed with each model's parameter count. Decodings already on that leaderboard are
not repeated, so a stopped run continues.
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from bench.unseen_voices import default_work, unseen_shards
from eval import leaderboard
from train.checkpoint import CHECKPOINTS, ModelCard

ROOT = Path(__file__).resolve().parents[1]


def epoch_models(run: str) -> dict[int, str]:
    return {
        int(p.parent.name.split("-")[1]): str(p)
        for p in sorted(Path(run, CHECKPOINTS).glob("epoch-*/model.pt"))
    }


def best_epoch(run: str) -> int:
    with open(Path(run) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    kept = epoch_models(run)
    return min((float(r["dev_distance"]), int(r["epoch"])) for r in rows if int(r["epoch"]) in kept)[1]


def averaged(run: str, last: int, out: Path) -> str:
    target = out / f"{Path(run).name}-last{last}" / "model.pt"
    if not target.exists():
        command = [sys.executable, "-m", "eval", "average", "--run", run, "--last", str(last)]
        subprocess.run([*command, "--weights", "live", "--out", str(target)], check=True, capture_output=True)
    return str(target)


def variants(runs: list[str], out: Path) -> list[tuple[str, list[str], list[str]]]:
    """(name, checkpoints, extra evaluate arguments) of each model to compare."""
    kept = {run: epoch_models(run) for run in runs}
    first, last = runs[0], {run: models[max(models)] for run, models in kept.items()}
    found = [
        ("best epoch", [kept[first][best_epoch(first)]], ["--weights", "live"]),
        ("last epoch", [last[first]], ["--weights", "live"]),
    ]
    for count in (3, 5):  # as many as the run keeps (its keep_last)
        if count <= len(kept[first]):
            found.append((f"mean of last {count} checkpoints", [averaged(first, count, out)], []))
    for run in runs:
        if run != first:
            found.append((f"last epoch ({Path(run).name})", [last[run]], ["--weights", "live"]))
        kind = ModelCard.load(last[run]).config.get("average", "none")
        if kind != "none":
            found.append((f"{kind} weights ({Path(run).name})", [last[run]], ["--weights", "averaged"]))
    for count in sorted({2, len(runs)} if len(runs) > 1 else set()):
        for combine in ("probs", "log_probs"):  # the members' last live weights, as each run's own row
            members = [last[run] for run in runs[:count]]
            found.append(
                (f"ensemble of {count} ({combine})", members, ["--weights", "live", "--combine", combine])
            )
    return found


def evaluate(checkpoints: list[str], extra: list[str], data: str, split: str, board: str, run: str) -> dict:
    command = [sys.executable, str(ROOT / "eval" / "main.py"), "--data", data, "--split", split]
    for checkpoint in checkpoints:
        command += ["--checkpoint", checkpoint]
    command += ["--beam", "50", "--decoders", "2", "--leaderboard", board, "--run", run, *extra]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", required=True, help="a run folder (repeat: the seeds)")
    parser.add_argument("--data", default="demo/shards")
    parser.add_argument("--solution", default="demo/corpus/test_solution.csv")
    parser.add_argument("--lm")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--out", default="demo/best-model", type=Path)
    parser.add_argument("--unseen", type=Path, help="the unseen voices' work folder (bench.unseen_voices)")
    parser.add_argument(
        "--only", nargs="+", metavar="WORDS", help="decode only the models whose name contains one of these"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    board = str(args.out / "leaderboard.csv")
    voices = "flite/awb,flite/rms"
    unseen = unseen_shards(args.data, voices, 200, args.unseen or default_work(voices, 200))
    decodings = [("beam 50", [])]
    if args.lm:
        decodings.append(("+ LM", ["--lm", args.lm, "--alpha", str(args.alpha), "--beta", str(args.beta)]))
    sets = [("dev", args.data, "dev", []), ("test", args.data, "test", ["--solution", args.solution])]
    sets.append(("unseen", unseen, "dev", []))
    print(
        f"{'model':36} {'parameters':>10} {'decoding':>8} {'dev PER':>8} {'test PER':>8} {'public':>7} {'private':>7} {'unseen PER':>10}"
    )
    for name, checkpoints, extra in variants(args.run, args.out):
        if args.only and not any(word in name for word in args.only):
            continue
        for label, lm in decodings:
            rows = {}
            for set_name, data, split, more in sets:
                run = f"{name} | {label} | {set_name}"
                done = [r for r in leaderboard.read(board) if r["run"] == run] if Path(board).exists() else []
                rows[set_name] = (
                    done[-1] if done else evaluate(checkpoints, [*extra, *lm, *more], data, split, board, run)
                )
            test = rows["test"]
            print(
                f"{name:36} {int(rows['dev']['parameters']):10,} {label:>8} {float(rows['dev']['per']):8.2%} "
                f"{float(test['per']):8.2%} {float(test['public_distance']):7.3f} {float(test['private_distance']):7.3f} "
                f"{float(rows['unseen']['per']):10.2%}",
                flush=True,
            )


if __name__ == "__main__":
    main()

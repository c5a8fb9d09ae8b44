"""How a trained model does on speakers it never heard: voices outside the default five.

    .venv/bin/python -m bench.unseen_voices [--run demo/run] [--data demo/shards] [--voices flite/awb,flite/rms]
                                            [--lm demo/lm/phones-3.arpa --alpha A --beta B]

Synthesises a dev-only corpus with the given voices (seed 99, so its sentences differ from the
training corpus), shards it with the training data's statistics, and evaluates the run's latest
checkpoint on it with greedy and beam-50 decoding (and beam 50 with the phoneme LM, given one),
next to its score on the usual dev split.
Corpus and shards stay under --work (default demo/unseen/<voices>-<utterances>): a second run
reuses them, since both stages resume from what is already there.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_work(voices: str, utterances: int) -> Path:
    """Where the unseen voices' corpus and shards go: demo/unseen/<voices>-<utterances>."""
    return ROOT / "demo" / "unseen" / f"{voices.replace('/', '-').replace(',', '+')}-{utterances}"


def unseen_shards(data: str, voices: str, utterances: int, work: Path) -> str:
    """The dev-only dataset of ``voices`` (seed 99), sharded with ``data``'s statistics, under ``work``
    (both stages resume from what is there)."""
    corpus = [sys.executable, "-m", "pipeline.corpus", "--dst", str(work / "corpus"), "--train", "0"]
    corpus += ["--test", "0", "--dev", str(utterances), "--seed", "99", "--voices", voices]
    subprocess.run(corpus, check=True, capture_output=True, cwd=ROOT)
    shards = [sys.executable, "-m", "pipeline", "--src", str(work / "corpus"), "--dst", str(work / "shards")]
    shards += ["--stats", f"{data}/stats.json"]
    subprocess.run(shards, check=True, capture_output=True, cwd=ROOT)
    return str(work / "shards")


def _evaluate(run: str, data: str, beam: int, lm: list[str]) -> dict:
    command = [sys.executable, str(ROOT / "eval" / "main.py"), "--checkpoint", run, "--data", data]
    command += ["--split", "dev", "--beam", str(beam), "--decoders", "2", *lm]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="demo/run")
    parser.add_argument("--data", default="demo/shards")
    parser.add_argument("--voices", default="flite/awb,flite/rms")
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--lm", help="also decode at beam 50 with this ARPA phoneme LM")
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--work", help="where the corpus and shards go (default demo/unseen/<voices>-<n>)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else default_work(args.voices, args.utterances)
    unseen = unseen_shards(args.data, args.voices, args.utterances, work)
    decodings = [("1", 1, []), ("50", 50, [])]
    if args.lm:
        decodings.append(
            ("50+LM", 50, ["--lm", args.lm, "--alpha", str(args.alpha), "--beta", str(args.beta)])
        )
    print(f"{'dev set':40} {'beam':>6} {'distance':>9} {'PER':>8}")
    for name, data in (
        (f"seen voices ({args.data})", args.data),
        (f"unseen voices ({args.voices})", unseen),
    ):
        for label, beam, lm in decodings:
            row = _evaluate(args.run, data, beam, lm)
            print(f"{name:40} {label:>6} {row['distance']:9.3f} {row['per']:8.2%}")


if __name__ == "__main__":
    main()

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
    default = (
        ROOT / "demo" / "unseen" / f"{args.voices.replace('/', '-').replace(',', '+')}-{args.utterances}"
    )
    work = Path(args.work) if args.work else default
    corpus = [
        sys.executable,
        "-m",
        "pipeline.corpus",
        "--dst",
        str(work / "corpus"),
        "--train",
        "0",
        "--test",
        "0",
    ]
    corpus += ["--dev", str(args.utterances), "--seed", "99", "--voices", args.voices]
    subprocess.run(corpus, check=True, capture_output=True, cwd=ROOT)
    shards = [sys.executable, "-m", "pipeline", "--src", str(work / "corpus"), "--dst", str(work / "shards")]
    shards += ["--stats", f"{args.data}/stats.json"]
    subprocess.run(shards, check=True, capture_output=True, cwd=ROOT)
    decodings = [("1", 1, []), ("50", 50, [])]
    if args.lm:
        decodings.append(
            ("50+LM", 50, ["--lm", args.lm, "--alpha", str(args.alpha), "--beta", str(args.beta)])
        )
    print(f"{'dev set':40} {'beam':>6} {'distance':>9} {'PER':>8}")
    for name, data in (
        (f"seen voices ({args.data})", args.data),
        (f"unseen voices ({args.voices})", str(work / "shards")),
    ):
        for label, beam, lm in decodings:
            row = _evaluate(args.run, data, beam, lm)
            print(f"{name:40} {label:>6} {row['distance']:9.3f} {row['per']:8.2%}")


if __name__ == "__main__":
    main()

"""Corpus generation speed per voice on this machine's cores.

    .venv/bin/python -m bench.corpus [--utterances 96] [--workers 2]

For each default voice, generates a train-only corpus with that voice alone (synthesis,
speed/noise, MFCCs, writing; worker start-up included) and prints utterances per second,
seconds of audio per second, and the share of failed attempts.
"""

import argparse
import tempfile
import time

from pipeline.corpus.build import CorpusSettings, generate
from pipeline.corpus.voices import DEFAULT_VOICES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{'voice':34} {'utt/s':>7} {'audio s/s':>10} {'failed':>7}  ({args.utterances} utt, {args.workers} workers)"
    )
    for voice in DEFAULT_VOICES:
        with tempfile.TemporaryDirectory() as folder:
            settings = CorpusSettings(
                dst=folder, counts=(args.utterances, 0, 0), workers=args.workers, voices=(voice,), seed=1
            )
            start = time.perf_counter()
            summary = generate(settings)
            seconds = time.perf_counter() - start
        speed = summary["utterances"]["train"] / seconds
        audio = summary["hours"] * 3600 / seconds
        print(f"{voice:34} {speed:7.1f} {audio:10.1f} {summary['failed_attempts']:7d}")


if __name__ == "__main__":
    main()

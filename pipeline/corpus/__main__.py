"""``python -m pipeline.corpus --dst DIR [--train N --dev N --test N] [--seed S] [--workers W] [--voices ...]``."""

import argparse
import logging
import os
import sys

from pipeline.corpus.build import CorpusSettings, generate
from pipeline.corpus.voices import DEFAULT_VOICES
from shards import s3

DEFAULTS = CorpusSettings(dst="")


def parse_args(argv: list[str] | None = None) -> CorpusSettings:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.corpus",
        description="Synthesise an English speech corpus with exact phoneme labels, in the HW3P2 layout.",
    )
    parser.add_argument(
        "--dst", required=True, help="folder to write (train/ dev/ test/ test_solution.csv corpus.json)"
    )
    parser.add_argument("--train", type=int, default=DEFAULTS.counts[0])
    parser.add_argument("--dev", type=int, default=DEFAULTS.counts[1])
    parser.add_argument("--test", type=int, default=DEFAULTS.counts[2])
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--voices", default=",".join(DEFAULT_VOICES), help="comma-separated festival/<voice> or flite/<voice>"
    )
    parser.add_argument("--words", default=DEFAULTS.words, help="Festival lexicon or word-per-line file")
    parser.add_argument("--noise-share", type=float, default=DEFAULTS.noise_share)
    args = parser.parse_args(argv)
    if min(args.train, args.dev, args.test) < 0 or args.workers < 1:
        parser.error("counts must be ≥ 0 and --workers ≥ 1")
    return CorpusSettings(
        dst=args.dst,
        counts=(args.train, args.dev, args.test),
        seed=args.seed,
        workers=args.workers,
        voices=tuple(v.strip() for v in args.voices.split(",") if v.strip()),
        words=args.words,
        noise_share=args.noise_share,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = parse_args(argv)
    try:
        summary = generate(settings)
    except Exception as error:
        return s3.refused(error, [settings.dst])
    print(
        f"done: {summary['utterances']} utterances, {summary['hours']:.2f} h, "
        f"{summary['mean_frames_per_phoneme']} frames/phoneme, {summary['failed_attempts']} failed attempts "
        f"{summary['failed_attempts_by_kind']}, {summary['dropped_slots']} slots dropped → {settings.dst}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

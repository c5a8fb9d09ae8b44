"""Writes a random data set in the HW3P2 layout: ``python -m pipeline.synthetic --dst DIR``.

For trying the system on data of HW3P2's shape in seconds (the tests and benchmarks use it too);
``python -m pipeline.corpus`` makes real speech instead. Features are random (each coefficient with
its own offset and scale, so normalisation has something to do); transcripts are random phoneme
strings short enough for CTC.
"""

import argparse
from pathlib import Path

import numpy as np

from shards.vocab import PHONEMES

S22 = ("train", "dev", "test", "<sos>", "<eos>", "SIL")
LATER = ("train-clean-100", "dev-clean", "test-clean", "[SOS]", "[EOS]", "[SIL]")


def random_transcript(rng: np.random.Generator, n_frames: int, markers: tuple) -> np.ndarray:
    *_, start, end, silence = markers
    inner = [PHONEMES[i] for i in rng.integers(2, len(PHONEMES), size=max(1, n_frames // 10))]
    return np.array([start, silence, *inner, silence, end])


def write_hw3p2(
    root: Path,
    counts: tuple[int, int, int] = (40, 10, 10),
    dim: int = 13,
    seed: int = 0,
    frames: tuple[int, int] = (60, 400),
    variant: tuple = S22,
    front_end_seed: int | None = None,
    more_train: tuple[tuple[str, int], ...] = (),
) -> Path:
    """Write train/dev/test splits under ``root``; returns ``root``. Each coefficient's offset and scale
    (the "front end") come from ``seed``, or from ``front_end_seed`` for new data of an earlier set's
    front end (another seed's are another front end: the pipeline's shift check refuses them).
    ``more_train`` adds training folders of that many utterances each, as Fall 2022's
    ``("train-clean-360", 104014)`` beside train-clean-100 (ids ``360-00000``, ...)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 5, size=dim)
    scales = rng.uniform(0.5, 4, size=dim)
    if front_end_seed is not None:
        front_end = np.random.default_rng(front_end_seed)
        offsets, scales = front_end.normal(0, 5, size=dim), front_end.uniform(0.5, 4, size=dim)
    folders = [*zip(variant[:3], counts, (True, True, False), strict=True)]
    folders += [(folder, count, True) for folder, count in more_train]
    for folder, count, labelled in folders:
        (root / folder / "mfcc").mkdir(parents=True, exist_ok=True)
        if labelled:
            (root / folder / "transcript").mkdir(exist_ok=True)
        prefix = folder[:2] if folder in variant else folder.rsplit("-", 1)[-1] + "-"
        ids = [f"{prefix}{i:05d}" for i in range(count)]
        for utterance_id in ids:
            n_frames = int(rng.integers(*frames))
            features = (rng.normal(size=(n_frames, dim)) * scales + offsets).astype(np.float32)
            np.save(root / folder / "mfcc" / f"{utterance_id}.npy", features)
            if labelled:
                transcript = random_transcript(rng, n_frames, variant)
                np.save(root / folder / "transcript" / f"{utterance_id}.npy", transcript)
        if not labelled:
            order = "file\n" + "".join(f"{i}.npy\n" for i in reversed(ids))
            (root / folder / "test_order.csv").write_text(order)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--dst", required=True, type=Path, help="local folder to write train/dev/test under")
    parser.add_argument("--train", type=int, default=40, help="utterances (default 40)")
    parser.add_argument("--dev", type=int, default=10, help="utterances (default 10)")
    parser.add_argument("--test", type=int, default=10, help="utterances (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--later-names",
        action="store_true",
        help="train-clean-100/dev-clean/test-clean and [SOS]-style markers, as semesters after spring 2022",
    )
    args = parser.parse_args(argv)
    if min(args.train, args.dev, args.test) < 0:
        parser.error("utterance counts must be ≥ 0")
    variant = LATER if args.later_names else S22
    write_hw3p2(args.dst, (args.train, args.dev, args.test), seed=args.seed, variant=variant)
    print(f"wrote {args.train + args.dev + args.test} utterances in the HW3P2 layout under {args.dst}")


if __name__ == "__main__":
    main()

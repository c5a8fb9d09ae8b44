"""What "the same front end" and "a feature shift" look like, measured: the numbers behind the shift rule.

    .venv/bin/python -m bench.feature_shift [--corpus demo/corpus] [--stats demo/shards/stats.json]
        [--unseen demo/unseen/flite-awb+flite-rms-200/corpus] [--fresh 60] [--png docs/feature-shift.png]

For each set of features, against the training statistics (per coefficient c, training mean m and
standard deviation s): the largest mean offset max_c |mean_c - m_c| / s_c and the spread
median_c |ln(std_c / s_c)|, over the whole set and over each of its utterances alone. Sets of the same
front end: the corpus's train, dev and test splits, the unseen voices, and freshly synthesised
sentences put through the corpus's front end. Shifted sets: the test split scaled by ln(10)/10 (a
natural-log mel spectrum), normalised per utterance, and the fresh audio through other extractor
settings (mels, window, FFT size, magnitude, a lifter, librosa's defaults, a natural-log mel). Prints a table with the
verdicts of the rule in shards/stats.py (``FeatureShift``), and draws both measures as a PNG.
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from shards.frontend import FrontEnd
from shards.stats import MEAN_OFFSET_LIMIT, SPREAD_LIMIT, FeatureShift, FeatureStats, read_stats


def _utterances(folder: Path) -> list[np.ndarray]:
    return [np.load(path, allow_pickle=False) for path in sorted(folder.glob("*.npy"))]


def _pooled(features: list[np.ndarray]) -> FeatureStats:
    return FeatureStats.pooled(map(FeatureStats.of, features), features[0].shape[1])


def _measures(features: list[np.ndarray], expected: FeatureStats) -> tuple[FeatureShift, list[FeatureShift]]:
    """The set's shift (pooled), and each utterance's alone."""
    alone = [FeatureStats.of(f).shift_from(expected, 1) for f in features]
    return _pooled(features).shift_from(expected, len(features)), alone


def _fresh_audio(count: int, seed: int) -> list[np.ndarray]:
    from pipeline.corpus.text import lexicon_words, random_sentence
    from pipeline.corpus.voices import DEFAULT_VOICES, Request, Spoken, synthesise, voice_by_name

    rng, words, audio = np.random.default_rng(seed), lexicon_words(), []
    voices = [voice_by_name(name) for name in DEFAULT_VOICES]
    with tempfile.TemporaryDirectory() as folder:
        for k, voice in enumerate(voices):
            f0 = sum(voice.f0_range) / 2
            requests = [
                Request(f"u{k}-{i}", random_sentence(rng, words, (4, 12)), 1.0, f0)
                for i in range(count // len(voices))
            ]
            spoken = synthesise(voice, requests, Path(folder))
            audio += [s.audio for s in spoken.values() if isinstance(s, Spoken)]
    return audio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("demo/corpus"))
    parser.add_argument("--stats", default="demo/shards/stats.json")
    parser.add_argument("--unseen", type=Path, default=Path("demo/unseen/flite-awb+flite-rms-200/corpus"))
    parser.add_argument("--fresh", type=int, default=60, help="sentences synthesised anew (0: none)")
    parser.add_argument("--png", type=Path, default=Path("docs/feature-shift.png"))
    args = parser.parse_args()
    expected = read_stats(args.stats)
    test = _utterances(args.corpus / "test" / "mfcc")
    same = {split: _utterances(args.corpus / split / "mfcc") for split in ("train", "dev", "test")}
    if (args.unseen / "dev" / "mfcc").exists():
        same["unseen voices"] = _utterances(args.unseen / "dev" / "mfcc")
    shifted = {
        "test × ln(10)/10 (ln mel)": [f * np.float32(np.log(10) / 10) for f in test],
        "test, normalised per utterance": [(f - f.mean(0)) / (f.std(0) + 1e-5) for f in test],
    }
    if args.fresh:
        audio = _fresh_audio(args.fresh, seed=7)
        corpus_front_end = FrontEnd()
        same["fresh audio, corpus front end"] = [corpus_front_end.mfcc(a) for a in audio]
        others = {
            "fresh, 80 mels": dataclasses.replace(corpus_front_end, n_mels=80),
            "fresh, 26 mels": dataclasses.replace(corpus_front_end, n_mels=26),
            "fresh, HTK mels": dataclasses.replace(corpus_front_end, mel_scale="htk"),
            "fresh, Hann window": dataclasses.replace(corpus_front_end, window="hann"),
            "fresh, 1024-point FFT": dataclasses.replace(corpus_front_end, n_fft=1024, win_length=1024),
            "fresh, magnitude mel": dataclasses.replace(corpus_front_end, power=1.0),
            "fresh, lifter 22": dataclasses.replace(corpus_front_end, lifter=22),
            "fresh, natural-log mel": dataclasses.replace(corpus_front_end, log="ln"),
            "fresh, librosa defaults": dataclasses.replace(
                corpus_front_end, n_fft=2048, win_length=2048, hop_length=512, window="hann", n_mels=128
            ),
        }
        shifted |= {name: [front_end.mfcc(a) for a in audio] for name, front_end in others.items()}

    rows = []
    print(
        f"{'set':32} {'utts':>5} | {'pooled: offset':>14} {'spread':>7} {'verdict':>8} | "
        f"{'alone: offset p99':>17} {'spread p99':>10} {'refused':>8}"
    )
    for kind, sets in (("same", same), ("shifted", shifted)):
        for name, features in sets.items():
            pooled, alone = _measures(features, expected)
            rows.append((kind, name, pooled, alone))
            offsets = [a.mean_offset.max() for a in alone]
            spreads = [a.spread for a in alone]
            refused = np.mean([a.is_shift for a in alone])
            print(
                f"{name:32} {len(features):5} | {pooled.mean_offset.max():14.2f} {pooled.spread:7.2f} "
                f"{'refused' if pooled.is_shift else 'accepted':>8} | {np.percentile(offsets, 99):17.2f} "
                f"{np.percentile(spreads, 99):10.2f} {refused:8.1%}"
            )
    print(
        f"rule (shards/stats.py), n utterances: offset > {MEAN_OFFSET_LIMIT[0]} + {MEAN_OFFSET_LIMIT[1]}/sqrt(n) "
        f"or spread > {SPREAD_LIMIT[0]} + {SPREAD_LIMIT[1]}/sqrt(n)"
    )
    _plot(rows, args.png)


def _plot(rows: list, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 6))
    for kind, name, pooled, alone in rows:
        marker = "o" if kind == "same" else "x"
        offsets, spreads = [a.mean_offset.max() for a in alone], [a.spread for a in alone]
        points = axis.scatter(offsets, spreads, s=6, alpha=0.35, marker=marker, label=f"{name} ({kind})")
        axis.scatter(
            [pooled.mean_offset.max()], [pooled.spread], s=140, marker=marker, color=points.get_facecolor()[0]
        )
    for n, style in ((1, "--"), (300, ":")):
        offset_limit = MEAN_OFFSET_LIMIT[0] + MEAN_OFFSET_LIMIT[1] / np.sqrt(n)
        spread_limit = SPREAD_LIMIT[0] + SPREAD_LIMIT[1] / np.sqrt(n)
        axis.plot(
            [0, offset_limit, offset_limit],
            [spread_limit, spread_limit, 0],
            color="grey",
            linestyle=style,
            label=f"accepted below: {n} utterance{'s' if n > 1 else ''}",
        )
    axis.set_xscale("symlog", linthresh=1)
    axis.set_yscale("symlog", linthresh=0.1)
    axis.set_xlabel("largest mean offset, in training standard deviations")
    axis.set_ylabel("median |ln(std / training std)|")
    axis.set_title(
        "Feature sets against the training statistics (small: one utterance, large: the whole set)"
    )
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()

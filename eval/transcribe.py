"""``python -m eval transcribe --checkpoint URL INPUT...``: a trained model's phonemes for feature files.

INPUT is an MFCC ``.npy`` file (raw, as HW3P2 ships them: the model's card holds the statistics it
was trained under, and they are applied here), or a folder of them (its ``*.npy``, sorted). Each is
checked as the pipeline checks a training file, normalised, run through the model (on a GPU when
there is one) and decoded greedy or with the beam (and LM) options evaluation has. One line per
input on stdout: ``name<TAB>phonemes`` (ARPABET, space-separated), or with ``--format jsonl`` an
object with the name, the phonemes, the PHONEME_MAP string, the beam's score (−ln P_CTC; 0 greedy)
and each phoneme's frame in the input (its CTC output frame times the model's time stride). An input
that cannot be used is one ``error:`` line on stderr naming it and why; the others are still
transcribed, and the exit status is 1.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import fsspec
import numpy as np
import torch

from eval.decode import make_decoder
from eval.main import add_lm_weights
from eval.model import load_model, model_url
from pipeline.validate import Rejected, check_features
from shards.stats import FeatureStats
from shards.vocab import PHONEMES, to_string


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="URL of a model.pt, or of a run folder (its latest)"
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="an MFCC .npy file, or a folder of them")
    parser.add_argument("--beam", type=int, default=50, help="beam width; 1 = greedy")
    parser.add_argument("--top-n", type=int, default=10, help="labels per frame a beam may expand")
    parser.add_argument("--lm", help="token LM (ARPA or KenLM binary) for the beam search")
    add_lm_weights(parser)
    parser.add_argument("--format", choices=("text", "jsonl"), default="text")


def input_files(inputs: list[str]) -> list[str]:
    """Each INPUT as given, a folder as its ``*.npy`` files, sorted."""
    files = []
    for url in inputs:
        fs, path = fsspec.core.url_to_fs(url)
        if fs.isdir(path):
            protocol = fsspec.core.split_protocol(url)[0]
            prefix = f"{protocol}://" if protocol not in (None, "file") else ""
            files += [prefix + found for found in sorted(fs.glob(f"{path.rstrip('/')}/*.npy"))]
        else:
            files.append(url)
    return files


def _features(url: str, feature_dim: int):
    try:
        with fsspec.open(url, "rb") as handle:
            data: bytes | Exception = handle.read()
    except OSError as error:  # FileNotFoundError, a folder, a store's refusal
        data = error
    features = check_features(data, url)
    if features.shape[1] != feature_dim:
        raise Rejected(url, f"{features.shape[1]} coefficients per frame, the model takes {feature_dim}")
    return features


def transcribe(args: argparse.Namespace) -> int:
    model, card = load_model(model_url(args.checkpoint))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    stats = FeatureStats(card.stats["frames"], np.asarray(card.stats["mean"]), np.asarray(card.stats["m2"]))
    decoder = make_decoder(args.beam, 1, args.top_n, args.lm, args.alpha, args.beta)
    stride = math.prod(model.config.strides[: model.config.conv_blocks])
    failed = 0
    for url in input_files(args.inputs):
        try:
            features = _features(url, card.feature_dim)
        except Rejected as rejected:
            print(f"error: {rejected}", file=sys.stderr)
            failed += 1
            continue
        normalised = torch.from_numpy(stats.normalise(features))[None].to(device)
        with torch.no_grad():
            log_probs, lengths = model(normalised, torch.tensor([len(features)]))
        (best, *_) = decoder.best(log_probs, lengths)[0]
        name = Path(fsspec.core.url_to_fs(url)[1]).name
        phonemes = " ".join(PHONEMES[k] for k in best.labels)
        if args.format == "text":
            print(f"{name}\t{phonemes}")
        else:
            frames = [frame * stride for frame in best.frames] if best.frames else None
            record = {"input": name, "phonemes": phonemes, "string": to_string(best.labels),
                      "score": -best.score, "frames": frames}  # fmt: skip
            print(json.dumps(record))
    decoder.close()
    return 1 if failed else 0

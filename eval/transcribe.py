"""``python -m eval transcribe (--checkpoint URL | --model FILE.onnx) INPUT...``: a trained model's
phonemes for files. ``--checkpoint`` runs PyTorch (repeated: an ensemble, eval/ensemble.py);
``--model`` an exported ONNX file through ONNX Runtime, without importing torch (eval/recogniser.py).

INPUT is an MFCC ``.npy`` file (raw, as HW3P2 ships them: the model's card holds the statistics it
was trained under, and they are applied here), a folder of them (its ``*.npy``, sorted), or an audio
file (``.wav``, ``.flac``, ...: any sample rate and channel count) when the card records the front
end the model's features came from (shards/frontend.py): mixed down, resampled and put through that
front end. Each is checked as the pipeline checks a training file, normalised, run through the model
(a checkpoint on a GPU when there is one) and decoded greedy or with the beam (and LM) options
evaluation has. Both kinds of model give the same transcripts and the same refusals (tested).

The ``.npy`` inputs are first checked against the model: when their folder (or one of the two above
it, as in HW3P2's ``ROOT/SPLIT/mfcc/``) records its front end in a ``frontend.json`` and the card
records one too, the two must agree; and they are compared, together, with the card's statistics
(the feature-shift rule of shards/stats.py). Features of another front end, or normalised already,
are refused (exit 2, one line) unless ``--accept-shift``.

One line per input on stdout: ``name<TAB>phonemes`` (ARPABET, space-separated), or with ``--format
jsonl`` an object with the name, the phonemes, the PHONEME_MAP string, the beam's score (−ln P_CTC;
0 greedy), each phoneme's frame in the input (its CTC output frame times the model's time stride)
and its time in seconds (that frame times the front end's hop; null when the front end is unknown).
An input that cannot be used is one ``error:`` line on stderr naming it and why; the others are
still transcribed, and the exit status is 1.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import fsspec
import numpy as np

from eval import recogniser
from eval.options import Decoding, Models, Url, add_decoding_arguments, add_models_arguments, request_of
from pipeline.validate import Rejected, check_features
from shards.errors import UserError
from shards.frontend import FrontEnd, recorded_front_end_of
from shards.stats import FeatureStats
from shards.store import glob_urls
from shards.vocab import PHONEMES, to_string

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


class FeatureShiftRefused(UserError):
    """The ``.npy`` inputs do not match the model's front end or statistics (and --accept-shift was not given)."""


@dataclasses.dataclass(frozen=True)
class Transcription:
    models: Models  # one checkpoint, or an ensemble (none: ``model``)
    inputs: list[str]  # .npy files, folders of them, audio files
    model: str | None = None  # an exported ONNX file (python -m eval export) instead of checkpoints
    decoding: Decoding = Decoding()
    format: str = "text"  # or jsonl
    accept_shift: bool = False  # transcribe .npy features that do not match the model's statistics anyway


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_models_arguments(parser, required=False)
    parser.add_argument(
        "--model",
        type=Url,
        help="an exported ONNX file (python -m eval export), run through ONNX Runtime without torch",
    )
    parser.add_argument(
        "inputs",
        type=Url,
        nargs="+",
        metavar="INPUT",
        help="an MFCC .npy file, a folder of them, or an audio file",
    )
    add_decoding_arguments(parser)
    parser.add_argument("--format", choices=("text", "jsonl"), default=Transcription.format)
    parser.add_argument(
        "--accept-shift",
        action="store_true",
        help="transcribe .npy features that do not match the model's statistics anyway",
    )


def input_files(inputs: list[str]) -> list[str]:
    """Each INPUT as given, a folder as its ``*.npy`` files, sorted."""
    files = []
    for url in inputs:
        fs, path = fsspec.core.url_to_fs(url)
        if fs.isdir(path):
            files += glob_urls(f"{url.rstrip('/')}/*.npy")
        else:
            files.append(url)
    return files


def _is_audio(url: str) -> bool:
    return url.lower().endswith(AUDIO_SUFFIXES)


def _features(url: str, feature_dim: int, front_end: FrontEnd | None) -> np.ndarray:
    """The input's raw features, or Rejected naming it and why."""
    if _is_audio(url):
        if front_end is None:
            raise Rejected(
                url,
                "the model's features are of unknown origin (its card records no front end), so only "
                "MFCC .npy features can be given, not audio",
            )
        try:
            features = front_end.features_of_file(url)
        except (OSError, ValueError, RuntimeError) as error:
            raise Rejected(url, f"unreadable audio: {error}") from None
    else:
        try:
            with fsspec.open(url, "rb") as handle:
                data: bytes | Exception = handle.read()
        except OSError as error:  # FileNotFoundError, a folder, a store's refusal
            data = error
        features = check_features(data, url)
    if features.shape[1] != feature_dim:
        raise Rejected(url, f"{features.shape[1]} coefficients per frame, the model takes {feature_dim}")
    return features


def _check_front_ends(urls: list[str], front_end: FrontEnd | None) -> None:
    """Each ``.npy`` input's recorded front end, where it has one, against the card's."""
    if front_end is None:
        return
    checked: set[str] = set()
    for url in urls:
        folder = url.rpartition("/")[0]
        if _is_audio(url) or folder in checked:
            continue
        checked.add(folder)
        recorded = recorded_front_end_of(url)
        if recorded is not None and (differences := front_end.differences(recorded[1])):
            raise FeatureShiftRefused(
                f"{recorded[0]}: the features were made by another front end than the model's card records "
                f"({'; '.join(differences)}); pass --accept-shift to transcribe them anyway"
            )


def _check_shift(inputs: dict[str, np.ndarray], stats: FeatureStats) -> None:
    """The ``.npy`` inputs, pooled, against the model's statistics (audio goes through the card's own front end)."""
    given = [features for url, features in inputs.items() if not _is_audio(url)]
    if not given:
        return
    observed = FeatureStats.pooled(map(FeatureStats.of, given), stats.dim)
    shift = observed.shift_from(stats, len(given))
    if shift.is_shift:
        raise FeatureShiftRefused(
            f"the {len(given)} .npy input(s) do not match the statistics the model was trained under: "
            f"{shift.describe()} — another front end, or features normalised already? "
            "pass --accept-shift to transcribe them anyway"
        )


def recogniser_of(request: Transcription) -> recogniser.Recogniser:
    """The ONNX file's, or the checkpoints'; exactly one of the two is given."""
    if (request.model is None) == (not request.models.checkpoints):
        raise UserError(
            "give the model as --checkpoint URL (repeated: an ensemble) or as --model FILE.onnx, one of them"
        )
    if request.model is None:
        return recogniser.of_checkpoints(request.models)
    if not request.model.lower().endswith(".onnx"):
        raise UserError(
            f"{request.model}: --model takes an ONNX file (.onnx, python -m eval export --format onnx); "
            "a checkpoint is given as --checkpoint"
        )
    return recogniser.of_onnx(request.model, request.models)


def transcribe(request: Transcription) -> int:
    """Each input's line on stdout; 1 when an input was refused, 2 when the features do not fit the model."""
    model = recogniser_of(request)
    inputs: dict[str, np.ndarray] = {}
    failed = 0
    for url in input_files(request.inputs):
        try:
            inputs[url] = _features(url, model.feature_dim, model.front_end)
        except Rejected as rejected:
            print(f"error: {rejected}", file=sys.stderr)
            failed += 1
    try:
        if not request.accept_shift:
            _check_front_ends(list(inputs), model.front_end)
            _check_shift(inputs, model.stats)
    except FeatureShiftRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    decoder = request.decoding.decoder()
    for url, features in inputs.items():
        log_probs = model.log_probs(features)
        (best, *_) = decoder.best(log_probs[None], np.array([len(log_probs)]))[0]
        name = Path(fsspec.core.url_to_fs(url)[1]).name
        phonemes = " ".join(PHONEMES[k] for k in best.labels)
        if request.format == "text":
            print(f"{name}\t{phonemes}")
            continue
        frames = [frame * model.time_stride for frame in best.frames] if best.frames else None
        seconds = None
        if frames is not None and model.front_end is not None:
            seconds = [round(frame * model.front_end.seconds_per_frame, 3) for frame in frames]
        record = {
            "input": name,
            "phonemes": phonemes,
            "string": to_string(best.labels),
            "score": -best.score,
            "frames": frames,
            "seconds": seconds,
        }
        print(json.dumps(record))
    decoder.close()
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    return transcribe(request_of(Transcription, args))

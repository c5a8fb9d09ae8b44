"""A model as transcription uses it: raw MFCCs in, frame log-probabilities out, with the facts of its
card that checking and timing the inputs need. Two kinds:

- checkpoints (one, or an ensemble: eval/ensemble.py) run through PyTorch, on a GPU when there is
  one; the features are normalised here with the card's statistics, as the pipeline did;
- an exported ONNX file (``python -m eval export``) runs through ONNX Runtime, its normalisation
  inside the graph. Nothing on this path imports torch: a deployment needs numpy, onnxruntime, the
  decoder and, for audio, the front end's library.

An exported file's interface is defined here, where it is read (eval/export.py writes it): the
graph's inputs and outputs, and the model card in the ONNX metadata under ``card``.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import numpy as np

from eval.options import Models
from shards.errors import UserError
from shards.frontend import FrontEnd
from shards.stats import FeatureStats
from shards.vocab import PHONEME_MAP, PHONEMES

INPUTS = ("features", "lengths")  # float32 (batch, frames, coefficients) raw MFCCs; int64 (batch,)
OUTPUTS = ("log_probs", "out_lengths")  # float32 (batch, output frames, classes); int64 (batch,)
CARD_KEY = "card"  # the ONNX metadata key; TorchScript's extra file is CARD_KEY + ".json"

log = logging.getLogger("eval.recogniser")


class NotAnExportedModel(UserError):
    """A ``--model`` file that is not an ONNX model written by ``python -m eval export``."""


@dataclass(frozen=True)
class Recogniser:
    """One utterance's raw (frames, coefficients) float32 features → its (output frames, classes)
    natural-log posteriors, and what the model's card says of its input and output."""

    log_probs: Callable[[np.ndarray], np.ndarray]
    feature_dim: int
    stats: FeatureStats  # the statistics the model was trained under
    front_end: FrontEnd | None  # the front end its features came from (None: unknown)
    time_stride: int  # input frames per output frame


def of_checkpoints(models: Models) -> Recogniser:
    """The checkpoints' model (an ensemble's members share their card's facts: eval/ensemble.py)."""
    import torch  # the PyTorch path only (the module's note)

    from eval.decode import on_host
    from eval.ensemble import load_models
    from eval.model import place

    model, (card, *_) = load_models(models)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    place(model, device)
    source = " + ".join(models.checkpoints)
    _check_vocabulary(card.phonemes, card.phoneme_map, source)
    stats = FeatureStats.from_document(card.stats, source)

    def log_probs(features: np.ndarray) -> np.ndarray:
        normalised = torch.from_numpy(stats.normalise(features))[None].to(device)
        with torch.no_grad():
            out, lengths = model(normalised, torch.tensor([len(features)]))
        return on_host(out[0, : int(lengths[0])])

    return Recogniser(log_probs, card.feature_dim, stats, _front_end(card.front_end), model.time_stride)


def of_onnx(url: str, models: Models) -> Recogniser:
    """An exported ONNX file, through ONNX Runtime on the CPU (held to ``models.max_params``)."""
    import onnxruntime  # the export extra
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
    )

    with fsspec.open(url, "rb") as handle:
        data = handle.read()
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf) as error:  # a file it cannot use
        raise NotAnExportedModel(f"{url}: not an ONNX model ONNX Runtime can load ({error})") from None
    card = _card(session, url)
    models.check_size(int(card.get("parameters", 0)), url, " (exported)")

    def log_probs(features: np.ndarray) -> np.ndarray:
        feeds = {
            "features": features[None].astype(np.float32),
            "lengths": np.array([len(features)], np.int64),
        }
        out, lengths = session.run(list(OUTPUTS), feeds)
        return out[0, : int(lengths[0])]

    try:
        front_end = _front_end(card["front_end"])
        stats = FeatureStats.from_document(card["stats"], f"{url} (its card)")
        return Recogniser(log_probs, int(card["feature_dim"]), stats, front_end, int(card["time_stride"]))
    except (KeyError, TypeError, ValueError) as error:
        raise NotAnExportedModel(f"{url}: its card is incomplete ({type(error).__name__}: {error})") from None


def _card(session, url: str) -> dict:
    """The model card in the file's metadata, checked against this project's graph and vocabulary."""
    found = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    if found is None:
        raise NotAnExportedModel(
            f"{url}: has no model card in its metadata: not written by python -m eval export"
        )
    try:
        card = json.loads(found)
    except ValueError as error:
        raise NotAnExportedModel(f"{url}: its model card is not JSON ({error})") from None
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if (inputs, outputs) != (INPUTS, OUTPUTS):
        raise NotAnExportedModel(
            f"{url}: takes {', '.join(inputs)} and gives {', '.join(outputs)}; an exported model takes "
            f"{', '.join(INPUTS)} and gives {', '.join(OUTPUTS)}"
        )
    _check_vocabulary(card.get("phonemes"), card.get("phoneme_map"), url)
    return card


def _front_end(record: dict | None) -> FrontEnd | None:
    """A card's front-end record (None: features of unknown origin)."""
    return None if record is None else FrontEnd(**record)


def _check_vocabulary(phonemes: object, phoneme_map: object, source: str) -> None:
    if phonemes != list(PHONEMES) or phoneme_map != PHONEME_MAP:
        raise UserError(
            f"{source}: the model's vocabulary is not this project's 41 classes (shards/vocab.py)"
        )

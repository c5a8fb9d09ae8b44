"""``python -m eval export --checkpoint URL --format onnx|torchscript --out FILE``: a trained model
(a checkpoint, an averaged one, or an ensemble: ``--checkpoint`` repeated) as one file that runs
without this repository.

The file's graph takes what HW3P2 ships and gives what a CTC decoder takes:

    features     float32 (batch, frames, coefficients)   raw MFCCs, before any normalisation
    lengths      int64 (batch,)                          each utterance's frames
    log_probs    float32 (batch, output frames, 41)      natural-log posteriors, blank at 0
    out_lengths  int64 (batch,)                          each utterance's output frames

Batch and time are dynamic. The dataset's normalisation (``(x − mean) / std`` in float64, as the
pipeline computes it) and the model's own per-utterance normalisation are inside; frames past an
utterance's length are zeroed after normalising, and every layer keeps them from real frames (the
convolutions mask them, the backward LSTM reads each utterance reversed within its own length), so
an utterance decodes the same in any batch. The model card (vocabulary, PHONEME_MAP, front end,
time stride, statistics, sources, parameter count) is written beside the file as ``FILE.json`` and
inside it: the ONNX file's metadata ``card``, the TorchScript archive's extra file ``card.json``.
ONNX goes through torch's TorchScript-based exporter (opset 17: an LSTM op per direction); its
dynamo exporter fixed the time axis of this model (an Expand of static shape) when tried.
"""

import argparse
import dataclasses
import io
import json
import logging
import warnings

import torch
from torch import nn

from eval.ensemble import Ensemble, load_models, parameter_count, resolved
from eval.model import chosen_weights
from eval.options import Models, Url, add_models_arguments, request_of
from eval.recogniser import CARD_KEY, INPUTS, OUTPUTS
from shards.store import Store
from train.checkpoint import ModelCard
from train.model import CTCModel, time_mask

log = logging.getLogger("eval.export")

FORMATS = ("onnx", "torchscript")
OPSET = 17


class Deployable(nn.Module):
    """The model with the dataset's normalisation in front: raw features and lengths in, the
    model's log-probabilities and output lengths out (the module docstring's signature)."""

    def __init__(self, model: CTCModel | Ensemble, stats: dict):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float64))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float64))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = ((features.double() - self.mean) / self.std).float()
        normalised = normalised * time_mask(lengths, features.shape[1])[:, :, None]
        log_probs, out_lengths = self.model(normalised, lengths)
        return log_probs, out_lengths.long()


@dataclasses.dataclass(frozen=True)
class Exporting:
    models: Models
    format: str  # FORMATS
    out: str  # the file (local or URL); its card goes beside it as <out>.json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_models_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument(
        "--out", type=Url, required=True, help="the file to write (local or URL); its card goes beside it"
    )


def card_of(models: Models, model: CTCModel | Ensemble, cards: list[ModelCard], format: str) -> dict:
    """What a user of the file needs to know beside the graph, as JSON."""
    first = cards[0]
    return {
        "format": format,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "feature_dim": first.feature_dim,
        "phonemes": list(first.phonemes),
        "phoneme_map": first.phoneme_map,
        "blank": 0,
        "time_stride": model.time_stride,
        "front_end": first.front_end,
        "stats": first.stats,
        "sources": list(models.checkpoints),
        "weights": [
            chosen_weights(c, models.weights, u)[0] for c, u in zip(cards, models.checkpoints, strict=True)
        ],
        "combine": models.combine if models.ensemble else None,
        "parameters": parameter_count(model),
        "epochs": [c.epoch for c in cards],
    }


def example_inputs(feature_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ragged batch of two to trace with (so that no length is taken for the batch's width)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 64, feature_dim, generator=generator), torch.tensor([64, 41])


def onnx_bytes(deployable: Deployable, card: dict) -> bytes:
    import onnx  # the export extra

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the legacy exporter is chosen (the module's note), and its LSTM warning is about initial
        # states given as inputs of a fixed batch; these are zeros of the input's batch (tested: a
        # batch of 9 through a graph traced on 2)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        _export_onnx(deployable, card, buffer)
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {CARD_KEY: json.dumps(card)})
    return graph.SerializeToString()


def _export_onnx(deployable: Deployable, card: dict, buffer: io.BytesIO) -> None:
    torch.onnx.export(
        deployable,
        example_inputs(card["feature_dim"]),
        buffer,
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes={
            "features": {0: "batch", 1: "frames"},
            "lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "output_frames"},
            "out_lengths": {0: "batch"},
        },
        opset_version=OPSET,
        dynamo=False,
    )


def torchscript_bytes(deployable: Deployable, card: dict) -> bytes:
    with warnings.catch_warnings():
        # torch.jit.trace is deprecated in favour of torch.export, but TorchScript is what was asked for
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace")
        traced = torch.jit.trace(deployable, example_inputs(card["feature_dim"]), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={f"{CARD_KEY}.json": json.dumps(card)})
    return buffer.getvalue()


def export(request: Exporting) -> dict:
    """Write the file and its card; what was written."""
    models = resolved(request.models)
    model, cards = load_models(models)
    card = card_of(models, model, cards, request.format)
    deployable = Deployable(model, cards[0].stats).eval()
    with torch.no_grad():
        data = (onnx_bytes if request.format == "onnx" else torchscript_bytes)(deployable, card)
    folder, _, name = request.out.rstrip("/").rpartition("/")
    store = Store(folder or ".")
    store.publish_bytes(data, name)
    store.publish_bytes(json.dumps(card, indent=1).encode(), f"{name}.json")
    log.info(
        "%s: %s, %.1f MB, %s parameters",
        request.out,
        request.format,
        len(data) / 1e6,
        f"{card['parameters']:,}",
    )
    return {
        "out": request.out,
        "card": f"{request.out}.json",
        "bytes": len(data),
        "parameters": card["parameters"],
    }


def run(args: argparse.Namespace) -> int:
    print(json.dumps(export(request_of(Exporting, args))))
    return 0

"""eval/export.py: a model as an ONNX or TorchScript file that gives PyTorch's numbers."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from eval.decode import Decoding
from eval.ensemble import load_models, parameter_count
from eval.export import FORMATS
from eval.options import Models
from shards.stats import FeatureStats
from tests.checkpoints import other_model
from tests.processes import why_failed

SUFFIX = {"onnx": "onnx", "torchscript": "pt"}


def _export(out: Path, format: str, *checkpoints: str) -> Path:
    command = [sys.executable, "-m", "eval", "export", "--format", format, "--out", str(out)]
    for checkpoint in checkpoints:
        command += ["--checkpoint", checkpoint]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, why_failed(result.stderr)
    assert json.loads(result.stdout.splitlines()[-1])["out"] == str(out)
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    return {f: _export(folder / f"model.{SUFFIX[f]}", f, trained[1]) for f in FORMATS}


def _raw_features(trained) -> list[np.ndarray]:
    folder = Path(trained[0]).parent / "raw" / "test" / "mfcc"
    return [np.load(path) for path in sorted(folder.glob("*.npy"))]


def _run(path: Path, format: str, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        log_probs, out_lengths = session.run(None, {"features": features, "lengths": lengths})
        return log_probs, out_lengths
    module = torch.jit.load(str(path))
    with torch.no_grad():
        log_probs, out_lengths = module(torch.from_numpy(features), torch.from_numpy(lengths))
    return log_probs.numpy(), out_lengths.numpy()


def _pytorch(checkpoints: list[str], features: np.ndarray) -> tuple[np.ndarray, int]:
    """One utterance as transcribe computes it: normalised on the host, then the model."""
    model, (card, *_) = load_models(Models(tuple(checkpoints)))
    stats = FeatureStats(card.stats["frames"], np.asarray(card.stats["mean"]), np.asarray(card.stats["m2"]))
    with torch.no_grad():
        log_probs, lengths = model(
            torch.from_numpy(stats.normalise(features))[None], torch.tensor([len(features)])
        )
    return log_probs[0].numpy(), int(lengths[0])


def _padded(utterances: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    batch = np.zeros((len(utterances), max(map(len, utterances)), utterances[0].shape[1]), np.float32)
    for i, features in enumerate(utterances):
        batch[i, : len(features)] = features
    return batch, np.array([len(f) for f in utterances], np.int64)


def _transcripts(log_probs: list[np.ndarray], beam: int) -> list[list[int]]:
    decoder = Decoding(beam=beam).decoder()
    found = [
        decoder.best(torch.from_numpy(lp)[None], torch.tensor([len(lp)]))[0][0].labels for lp in log_probs
    ]
    decoder.close()
    return found


@pytest.mark.parametrize("format", FORMATS)
def test_the_exported_model_gives_pytorch_s_numbers_one_by_one_and_in_ragged_batches(
    trained, exported, format
):
    utterances = _raw_features(trained)
    expected = [_pytorch([trained[1]], features) for features in utterances]
    alone = []
    for features, (log_probs, length) in zip(utterances, expected, strict=True):
        got, got_lengths = _run(exported[format], format, *_padded([features]))
        assert got.dtype == np.float32 and got_lengths.dtype == np.int64 and got_lengths.tolist() == [length]
        np.testing.assert_allclose(got[0], log_probs, rtol=0, atol=1e-4)
        alone.append(got[0])
    batch, lengths = _padded(utterances)  # 9 utterances of 60-200 frames, zero-padded
    together, out_lengths = _run(exported[format], format, batch, lengths)
    assert out_lengths.tolist() == [length for _, length in expected]
    for i, single in enumerate(alone):
        np.testing.assert_allclose(together[i, : out_lengths[i]], single, rtol=0, atol=1e-5)
    for beam in (1, 50):
        assert _transcripts(alone, beam) == _transcripts([lp for lp, _ in expected], beam)
    assert any(_transcripts(alone, 1))


@pytest.mark.parametrize("format", FORMATS)
def test_the_card_is_beside_the_file_and_inside_it(trained, exported, format):
    beside = json.loads(Path(f"{exported[format]}.json").read_text())
    if format == "onnx":
        props = {p.key: p.value for p in onnx.load(str(exported[format])).metadata_props}
        inside = json.loads(props["card"])
    else:
        with zipfile.ZipFile(exported[format]) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith("extra/card.json")]
            inside = json.loads(archive.read(name))
    model, (card, *_) = load_models(Models((trained[1],)))
    assert inside == beside and beside["format"] == format and beside["sources"] == [trained[1]]
    assert beside["phonemes"] == card.phonemes and beside["phoneme_map"] == card.phoneme_map
    assert beside["time_stride"] == model.time_stride and beside["parameters"] == parameter_count(model)
    assert beside["stats"]["mean"] == list(card.stats["mean"]) and beside["inputs"] == ["features", "lengths"]


def test_an_ensemble_exports_as_one_graph_of_its_members(trained, tmp_path):
    data, model, _ = trained
    other = other_model(model, tmp_path)
    path = _export(tmp_path / "pair.onnx", "onnx", model, other)
    features = _raw_features(trained)[0]
    log_probs, length = _pytorch([model, other], features)
    got, got_lengths = _run(path, "onnx", *_padded([features]))
    assert got_lengths.tolist() == [length]
    np.testing.assert_allclose(got[0], log_probs, rtol=0, atol=1e-4)
    assert json.loads(Path(f"{path}.json").read_text())["combine"] == "probs"

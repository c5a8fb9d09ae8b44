"""eval/export.py: a model as an ONNX or TorchScript file that gives PyTorch's numbers."""

import json
import subprocess
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
from eval.recogniser import of_checkpoints
from shards.stats import FeatureStats
from tests.checkpoints import other_model
from tests.processes import eval_command, export_model, why_failed

SUFFIX = {"onnx": "onnx", "torchscript": "pt"}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    return {f: export_model(folder / f"model.{SUFFIX[f]}", trained[1], format=f) for f in FORMATS}


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


def _pytorch(checkpoints: list[str]):
    """Utterances as transcribe computes them through PyTorch: normalised on the host, then the model."""
    model = of_checkpoints(Models(tuple(checkpoints)))

    def log_probs_and_length(features: np.ndarray) -> tuple[np.ndarray, int]:
        log_probs = model.log_probs(features)
        return log_probs, len(log_probs)

    return log_probs_and_length


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
    pytorch = _pytorch([trained[1]])
    expected = [pytorch(features) for features in utterances]
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
    path = export_model(tmp_path / "pair.onnx", model, other)
    features = _raw_features(trained)[0]
    log_probs, length = _pytorch([model, other])(features)
    got, got_lengths = _run(path, "onnx", *_padded([features]))
    assert got_lengths.tolist() == [length]
    np.testing.assert_allclose(got[0], log_probs, rtol=0, atol=1e-4)
    assert json.loads(Path(f"{path}.json").read_text())["combine"] == "probs"


def _transcripts_of(given: list[str], *args: str) -> list[dict]:
    result = eval_command("transcribe", *given, "--format", "jsonl", *args, without_torch="--model" in given)
    assert result.returncode == 0, why_failed(result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("beam", [1, 50])
def test_transcription_through_onnx_runtime_is_pytorch_s_without_importing_torch(
    trained, exported, beam, tmp_path
):
    """The project's beam search and LM on ONNX Runtime's log-probabilities: PyTorch's transcripts."""
    data, checkpoint, _ = trained
    folder = str(Path(data).parent / "raw" / "test" / "mfcc")
    decoding = ["--beam", str(beam)]
    if beam > 1:
        lm = eval_command("lm", "--data", data, "--order", "3", "--out", str(tmp_path / "lm.arpa"))
        assert lm.returncode == 0, why_failed(lm.stderr)
        decoding += ["--lm", str(tmp_path / "lm.arpa"), "--alpha", "0.5", "--beta", "1.0"]
    onnx = _transcripts_of(["--model", str(exported["onnx"])], folder, *decoding)
    pytorch = _transcripts_of(["--checkpoint", checkpoint], folder, *decoding)
    assert len(onnx) == 9 and [r["input"] for r in onnx] == [r["input"] for r in pytorch]
    for a, b in zip(onnx, pytorch, strict=True):
        assert (a["phonemes"], a["frames"]) == (b["phonemes"], b["frames"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
    assert any(r["phonemes"] for r in onnx)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_bad_inputs_get_the_same_one_line_errors_through_onnx_runtime(trained, exported, tmp_path):
    data, checkpoint, _ = trained
    (tmp_path / "garbage.npy").write_bytes(b"not a numpy file")
    np.save(tmp_path / "wide.npy", np.zeros((50, 20), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    good = sorted((Path(data).parent / "raw" / "test" / "mfcc").glob("*.npy"))[0]
    inputs = [str(tmp_path / n) for n in ("garbage.npy", "wide.npy", "objects.npy", "missing.npy")]
    results = {
        kind: eval_command("transcribe", *given, *inputs, str(good), without_torch=kind == "onnx")
        for kind, given in (
            ("onnx", ["--model", str(exported["onnx"])]),
            ("pytorch", ["--checkpoint", checkpoint]),
        )
    }
    errors = _error_lines(results["onnx"])
    assert results["onnx"].returncode == results["pytorch"].returncode == 1
    assert errors == _error_lines(results["pytorch"]) and len(errors) == 4
    assert [line.split(": ")[1] for line in errors] == inputs
    assert results["onnx"].stdout == results["pytorch"].stdout and results["onnx"].stdout.startswith(
        good.name
    )
    normalised = tmp_path / "normalised"
    normalised.mkdir()
    stats = FeatureStats.from_json((Path(data) / "stats.json").read_bytes(), "stats.json")
    for path in sorted((Path(data).parent / "raw" / "test" / "mfcc").glob("*.npy")):
        np.save(normalised / path.name, stats.normalise(np.load(path)).astype(np.float32))
    refused = {
        kind: eval_command("transcribe", *given, str(normalised), without_torch=kind == "onnx")
        for kind, given in (
            ("onnx", ["--model", str(exported["onnx"])]),
            ("pytorch", ["--checkpoint", checkpoint]),
        )
    }
    assert refused["onnx"].returncode == refused["pytorch"].returncode == 2
    assert _error_lines(refused["onnx"]) == _error_lines(refused["pytorch"])
    assert "do not match the statistics the model was trained under" in refused["onnx"].stderr


def test_a_model_that_is_not_an_exported_onnx_file_is_refused_in_one_line(trained, exported, tmp_path):
    data, checkpoint, _ = trained
    good = str(sorted((Path(data).parent / "raw" / "test" / "mfcc").glob("*.npy"))[0])
    bare = onnx.load(str(exported["onnx"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    cases = {
        ("--model", str(tmp_path / "bare.onnx")): "has no model card in its metadata",
        ("--model", str(tmp_path / "broken.onnx")): "not an ONNX model ONNX Runtime can load",
        ("--model", str(exported["torchscript"])): "--model takes an ONNX file",
        ("--model", str(tmp_path / "missing.onnx")): "missing.onnx",
        ("--model", str(exported["onnx"]), "--checkpoint", checkpoint): "--checkpoint URL",
        (): "--checkpoint URL",
    }
    for given, message in cases.items():
        result = eval_command("transcribe", *given, good, without_torch=True)
        assert result.returncode == 2 and result.stdout == "", why_failed(result.stderr)
        (line,) = _error_lines(result)
        assert message in line, line

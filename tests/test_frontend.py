"""The front end travels with the data and the model; a feature shift is refused; transcribe takes audio.

Real synthesised speech throughout (the demo corpus's voices): a small corpus is the training data,
a corpus of two voices it never heard is "the same front end, other speakers", and freshly spoken
sentences put through other extractor settings are "another front end".
"""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from pipeline.build import Settings, build
from pipeline.corpus.build import CorpusSettings, generate
from pipeline.corpus.text import lexicon_words, random_sentence
from pipeline.corpus.voices import Request, Spoken, synthesise, voice_by_name
from pipeline.synthetic import write_hw3p2
from shards.frontend import FILE, FrontEnd, read_front_end
from tests.processes import TORCH_IMPORTED, eval_command, export_model, pipeline_command, why_failed
from train import checkpoint

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(sentence_words=(4, 10), workers=2)
TINY_MODEL = [
    "channels=16",
    "lstm_layers=1",
    "lstm_hidden=16",
    "classifier_hidden=32",
    "epochs=1",
    "num_workers=0",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generate(CorpusSettings(dst=str(root), counts=(40, 12, 12), seed=3, **SMALL))
    return root


@pytest.fixture(scope="module")
def dataset(corpus, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("dataset")
    build(Settings(str(corpus), str(dst), shard_mb=0.5))
    return dst


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    command = [sys.executable, str(REPO / "train" / "main.py"), "--data", str(dataset), "--out", str(run)]
    subprocess.run([*command, *TINY_MODEL], check=True, capture_output=True)
    return run / checkpoint.epoch_folder(0) / "model.pt"


@pytest.fixture(scope="module")
def fresh_audio(tmp_path_factory) -> list[np.ndarray]:
    """Sentences spoken anew by two of the corpus's voices, at 16 kHz."""
    rng, words, audio = np.random.default_rng(11), lexicon_words(), []
    for voice in (voice_by_name("festival/kal_diphone"), voice_by_name("flite/slt")):
        f0 = sum(voice.f0_range) / 2
        requests = [Request(f"s{i}", random_sentence(rng, words, (4, 10)), 1.0, f0) for i in range(6)]
        spoken = synthesise(voice, requests, tmp_path_factory.mktemp("speak"))
        audio += [s.audio for s in spoken.values() if isinstance(s, Spoken)]
    assert len(audio) >= 8
    return audio


def _pipeline(src: Path, dst: Path, *extra: str) -> subprocess.CompletedProcess:
    command = pipeline_command(src, dst, "--workers", "1", *extra)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def _test_split_of(features: list[np.ndarray], root: Path) -> Path:
    """An unlabelled HW3P2 test split holding ``features``."""
    (root / "test" / "mfcc").mkdir(parents=True)
    for k, f in enumerate(features):
        np.save(root / "test" / "mfcc" / f"u{k:03d}.npy", f.astype(np.float32))
    (root / "test" / "test_order.csv").write_text(
        "file\n" + "".join(f"u{k:03d}.npy\n" for k in range(len(features)))
    )
    return root


def _corpus_test_features(corpus: Path) -> list[np.ndarray]:
    return [np.load(p) for p in sorted((corpus / "test" / "mfcc").glob("*.npy"))]


def test_the_front_end_goes_from_corpus_to_dataset_to_card_unchanged(corpus, dataset, model):
    recorded = (corpus / FILE).read_bytes()
    assert FrontEnd.from_json(recorded, FILE) == FrontEnd(sample_rate=16_000)
    # Invariant: the corpus's features are that front end's (one module computes them)
    assert (dataset / FILE).read_bytes() == recorded
    card = checkpoint.ModelCard.load(str(model))
    assert card.front_end == json.loads(recorded)


def test_a_source_without_a_record_is_of_unknown_front_end(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(6, 2, 2), seed=8)
    result = _pipeline(raw, tmp_path / "shards")
    assert result.returncode == 0, why_failed(result.stderr)
    assert "front end of" in result.stderr and "unknown (no frontend.json)" in result.stderr
    assert read_front_end(str(tmp_path / "shards")) is None


def test_the_same_front_end_passes_the_shift_check(corpus, dataset, tmp_path):
    """The corpus's own splits and voices the training data never had, against the training statistics."""
    unseen = tmp_path / "unseen"
    generate(
        CorpusSettings(
            dst=str(unseen), counts=(0, 12, 12), seed=9, voices=("flite/awb", "flite/rms"), **SMALL
        )
    )
    for src in (corpus, unseen):
        result = _pipeline(src, tmp_path / f"{src.name}-shards", "--stats", str(dataset / "stats.json"))
        assert result.returncode == 0, why_failed(result.stderr)
        assert "features do not match" not in result.stderr


def _scaled(corpus: Path, fresh: list[np.ndarray]) -> list[np.ndarray]:
    return [f * np.float32(np.log(10) / 10) for f in _corpus_test_features(corpus)]  # a natural-log mel


def _normalised(corpus: Path, fresh: list[np.ndarray]) -> list[np.ndarray]:
    return [(f - f.mean(0)) / (f.std(0) + 1e-5) for f in _corpus_test_features(corpus)]


def _other_front_end(**settings):
    def features(corpus: Path, fresh: list[np.ndarray]) -> list[np.ndarray]:
        return [dataclasses.replace(FrontEnd(), **settings).mfcc(a) for a in fresh]

    return features


@pytest.mark.parametrize(
    "shifted",
    [
        _scaled,
        _normalised,
        _other_front_end(power=1.0),
        _other_front_end(lifter=22),
        _other_front_end(n_fft=2048, win_length=2048, hop_length=512, window="hann", n_mels=128),
    ],
    ids=["ln-mel", "normalised-per-utterance", "magnitude-mel", "lifter-22", "librosa-defaults"],
)
def test_each_kind_of_shift_is_refused_and_writes_nothing(corpus, dataset, fresh_audio, tmp_path, shifted):
    src = _test_split_of(shifted(corpus, fresh_audio), tmp_path / "src")
    result = _pipeline(src, tmp_path / "shards", "--stats", str(dataset / "stats.json"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, why_failed(
        result.stderr
    )
    assert f"{src}/test: features do not match the statistics applied" in errors[0]
    assert " mean " in errors[0] and "(expected " in errors[0] and "--accept-shift" in errors[0]
    assert not (tmp_path / "shards").exists() or not [
        p for p in (tmp_path / "shards").iterdir() if p.name != ".staging"
    ]
    if shifted is _scaled:  # the flag is the same for every kind
        accepted = _pipeline(
            src, tmp_path / "accepted", "--stats", str(dataset / "stats.json"), "--accept-shift"
        )
        assert accepted.returncode == 0, why_failed(accepted.stderr)
        assert "accepted (--accept-shift)" in accepted.stderr


def test_front_end_records_that_differ_are_refused_naming_the_settings(corpus, dataset, tmp_path):
    """The same numbers, but the source says another extractor made them: that alone is refused."""
    src = _test_split_of(_corpus_test_features(corpus), tmp_path / "src")
    (src / FILE).write_bytes(dataclasses.replace(FrontEnd(), n_mels=80, hop_length=256).to_json())
    result = _pipeline(src, tmp_path / "shards", "--stats", str(dataset / "stats.json"))
    assert result.returncode == 2, why_failed(result.stderr)
    assert f"{src}/{FILE}: another front end than {dataset}/{FILE} records" in result.stderr
    assert "hop_length: 160 → 256; n_mels: 40 → 80" in result.stderr and "--accept-shift" in result.stderr


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> Path:
    return export_model(tmp_path_factory.mktemp("onnx") / "model.onnx", model)


@pytest.fixture(params=["checkpoint", "onnx"])
def given(request, model) -> list[str]:
    """The model as transcribe's arguments: the checkpoint (PyTorch), or its ONNX export (ONNX Runtime)."""
    if request.param == "checkpoint":
        return ["--checkpoint", str(model)]
    return ["--model", str(request.getfixturevalue("exported"))]


def _transcribe(given: list[str], *inputs: str) -> subprocess.CompletedProcess:
    """``eval transcribe`` on ``inputs``; through ONNX Runtime, its status tells whether torch was imported."""
    result = eval_command(
        "transcribe", *given, "--beam", "4", "--format", "jsonl", *inputs, without_torch="--model" in given
    )
    assert result.returncode != TORCH_IMPORTED, "transcription through ONNX Runtime imported torch"
    return result


def test_transcribe_on_audio_equals_transcribe_on_the_features_its_front_end_makes(
    model, given, fresh_audio, tmp_path
):
    """A WAV at 22.05 kHz in stereo and a FLAC at 16 kHz: mixed down and resampled to the card's front end."""
    import librosa

    wav, flac = tmp_path / "spoken.wav", tmp_path / "spoken.flac"
    stereo = librosa.resample(fresh_audio[0], orig_sr=16_000, target_sr=22_050)
    soundfile.write(wav, np.stack([stereo, 0.5 * stereo], axis=1), 22_050)
    soundfile.write(flac, fresh_audio[1], 16_000)
    front_end = FrontEnd(**checkpoint.ModelCard.load(str(model)).front_end)
    for audio in (wav, flac):
        np.save(tmp_path / f"{audio.stem}-{audio.suffix[1:]}.npy", front_end.features_of_file(str(audio)))
    from_audio = _transcribe(given, str(wav), str(flac))
    from_features = _transcribe(given, str(tmp_path / "spoken-wav.npy"), str(tmp_path / "spoken-flac.npy"))
    assert from_audio.returncode == 0 and from_features.returncode == 0, why_failed(
        from_audio.stderr + from_features.stderr
    )
    a = [json.loads(line) for line in from_audio.stdout.splitlines()]
    b = [json.loads(line) for line in from_features.stdout.splitlines()]
    assert [r["input"] for r in a] == ["spoken.wav", "spoken.flac"]
    assert [{**r, "input": None} for r in a] == [{**r, "input": None} for r in b]
    for record in a:
        # Invariant: a phoneme's time is its input frame times the front end's hop
        assert record["seconds"] == [round(f * 160 / 16_000, 3) for f in record["frames"]]


def _is_log_line(line: str) -> bool:
    """A logging line (``2026-12-05 22:22:51,068 eval.options: model: ...``), not an error line."""
    return re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", line) is not None


def test_transcribe_refuses_shifted_features_and_bad_audio_by_name(given, corpus, tmp_path):
    scaled = tmp_path / "scaled.npy"
    np.save(scaled, _corpus_test_features(corpus)[0] * np.float32(np.log(10) / 10))
    refused = _transcribe(given, str(scaled))
    assert refused.returncode == 2 and refused.stdout == "", why_failed(refused.stderr)
    assert (
        "do not match the statistics the model was trained under" in refused.stderr
        and "--accept-shift" in refused.stderr
    )
    accepted = _transcribe(given, str(scaled), "--accept-shift")
    assert accepted.returncode == 0 and len(accepted.stdout.splitlines()) == 1
    garbage, silent = tmp_path / "garbage.wav", tmp_path / "empty.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    soundfile.write(silent, np.zeros(0, dtype=np.float32), 16_000)
    good = sorted((corpus / "test" / "mfcc").glob("*.npy"))[0]
    result = _transcribe(given, str(garbage), str(silent), str(good))
    errors = [line for line in result.stderr.splitlines() if not _is_log_line(line)]
    assert result.returncode == 1 and [line.split(":")[1].strip() for line in errors] == [
        str(garbage),
        str(silent),
    ]
    assert errors[0].endswith("unreadable audio: not audio libsndfile can read (Format not recognised.)")
    assert errors[1].endswith("unreadable audio: the audio holds no samples")
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == [good.name]


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_audio_needs_a_model_whose_card_records_its_front_end(model, tmp_path, kind):
    card = checkpoint.load(str(model))
    unknown = tmp_path / "unknown.pt"
    torch.save({**card, "front_end": None}, unknown)
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(8000, dtype=np.float32), 16_000)
    given = ["--checkpoint", str(unknown)]
    if kind == "onnx":
        given = ["--model", str(export_model(tmp_path / "unknown.onnx", unknown))]
    result = _transcribe(given, str(wav))
    assert result.returncode == 1
    assert f"error: {wav}: the model's features are of unknown origin" in result.stderr
    assert "only MFCC .npy features can be given" in result.stderr


def test_transcribe_refuses_a_folder_whose_record_names_another_front_end(given, corpus, tmp_path):
    """The corpus's own test features, under a record that differs from the card's: that alone is refused."""
    mfcc = tmp_path / "root" / "test" / "mfcc"
    mfcc.mkdir(parents=True)
    for source in sorted((corpus / "test" / "mfcc").glob("*.npy"))[:3]:
        (mfcc / source.name).write_bytes(source.read_bytes())
    record = tmp_path / "root" / FILE
    record.write_bytes((corpus / FILE).read_bytes())
    same = _transcribe(given, str(mfcc))
    assert same.returncode == 0 and len(same.stdout.splitlines()) == 3, why_failed(same.stderr)
    record.write_bytes(dataclasses.replace(FrontEnd(), n_mels=80, log="ln").to_json())
    for inputs in ([str(mfcc)], [str(mfcc / "test-000001.npy")]):
        refused = _transcribe(given, *inputs)
        assert refused.returncode == 2 and refused.stdout == "", why_failed(refused.stderr)
        assert [line for line in refused.stderr.splitlines() if not _is_log_line(line)] == [
            f"error: {record}: the features were made by another front end than the model's card records "
            "(n_mels: 40 → 80; log: dB → ln); pass --accept-shift to transcribe them anyway"
        ]
    # the nearest record is the one that counts: the mfcc folder's own, the same as the card's
    (mfcc / FILE).write_bytes((corpus / FILE).read_bytes())
    assert _transcribe(given, str(mfcc)).returncode == 0
    (mfcc / FILE).unlink()
    accepted = _transcribe(given, str(mfcc), "--accept-shift")
    assert accepted.returncode == 0 and accepted.stdout == same.stdout, why_failed(accepted.stderr)

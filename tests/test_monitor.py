"""train/monitor.py: the blank-plateau alarm and the check that the time stride leaves CTC its frames."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.manifest import read_split_metadata
from shards.vocab import PHONEMES
from tests.processes import REPO
from train.config import TrainConfig
from train.model import CTCModel
from train.monitor import StrideTooLarge, blank_alarm, ctc_frame_check


def _epochs(*empty_shares: float) -> list[dict]:
    return [{"epoch": k, "dev_empty_share": e, "dev_blank_share": 1.0} for k, e in enumerate(empty_shares)]


def test_the_blank_alarm_waits_three_epochs_and_needs_nearly_every_transcript_empty():
    assert blank_alarm(_epochs(1.0, 1.0), 4) is None  # a CTC model may take a few epochs
    assert blank_alarm(_epochs(1.0, 1.0, 0.9), 4) is None  # it has started to emit labels
    assert blank_alarm(_epochs(0.2, 0.5, 0.96), 4).startswith("epoch 2: after 3 epochs")
    assert "time stride (4)" in blank_alarm(_epochs(1.0, 1.0, 1.0, 1.0), 4)


def _rows(frames: list[int], needs: list[int]) -> list[dict]:
    return [
        {"id": f"u{k}", "n_frames": f, "ctc_frames": n}
        for k, (f, n) in enumerate(zip(frames, needs, strict=True))
    ]


def test_the_stride_check_names_the_utterances_it_leaves_short_and_refuses_many():
    model = CTCModel(13, TrainConfig(channels=8, conv_blocks=2, strides=[2, 2], lstm_layers=1, lstm_hidden=8))
    frames = torch.tensor([40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 41])
    assert model.output_lengths(frames).tolist() == [10] * 10 + [11]  # ceil(T / 4) with kernel 3, padding 1
    assert (
        ctc_frame_check("train", _rows(frames.tolist(), [10] * 11), model.output_lengths(frames), 4) is None
    )
    one_short = _rows(frames.tolist(), [10] * 10 + [12])
    found = ctc_frame_check("train", one_short, model.output_lengths(frames), 4)
    assert found == (
        "train: 1 of 11 utterances have fewer output frames at time stride 4 than CTC needs for their "
        "labels (e.g. u10): they cannot be learnt"
    )
    two_short = _rows(frames.tolist(), [11, 11] + [10] * 9)  # 2 of 11: above a tenth
    with pytest.raises(
        StrideTooLarge, match=r"train: 2 of 11 utterances .* \(e.g. u0, u1\).*use smaller strides"
    ):
        ctc_frame_check("train", two_short, model.output_lengths(frames), 4)
    # a dataset written before ctc_frames: the labels' count is the need
    older = [
        {k: v for k, v in r.items() if k != "ctc_frames"} | {"n_phonemes": r["ctc_frames"]} for r in one_short
    ]
    assert ctc_frame_check("dev", older, model.output_lengths(frames), 4).startswith("dev: 1 of 11")


def test_the_manifest_counts_the_frames_ctc_needs_with_repeats(tmp_path):
    raw = write_hw3p2(tmp_path / "raw", counts=(4, 2, 2), frames=(60, 100), seed=3)
    labels = ["SIL", "AA", "AA", "B", "B", "B", "SIL"]  # 7 labels, 3 equal neighbours: 10 frames
    np.save(raw / "train" / "transcript" / "tr00000.npy", np.array(["<sos>", *labels, "<eos>"]))
    build(Settings(str(raw), str(tmp_path / "shards")))
    _, rows = read_split_metadata(str(tmp_path / "shards"), "train")
    row = next(r for r in rows if r["id"] == "tr00000")
    assert (row["n_phonemes"], row["ctc_frames"]) == (7, 10)
    assert all(PHONEMES.index(p) for p in labels)


@pytest.fixture(scope="module")
def long_transcripts(tmp_path_factory):
    """A dataset whose transcripts hold a phoneme every 3 frames in ``count`` train utterances: they
    fit a time stride of 2, not of 4."""

    def make(count: int):
        root = tmp_path_factory.mktemp("long")
        raw = write_hw3p2(root / "raw", counts=(20, 4, 2), frames=(60, 120), seed=9)
        rng = np.random.default_rng(0)
        for k in range(count):
            n = len(np.load(raw / "train" / "mfcc" / f"tr{k:05d}.npy"))
            inner = [PHONEMES[i] for i in rng.integers(2, len(PHONEMES), size=n // 3)]
            np.save(raw / "train" / "transcript" / f"tr{k:05d}.npy", np.array(["<sos>", *inner, "<eos>"]))
        build(Settings(str(raw), str(root / "shards")))
        return str(root / "shards")

    return make


def _train(data: str, out, strides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train" / "main.py"), "--data", data, "--out", str(out)]
    settings = ["channels=8", "lstm_layers=1", "lstm_hidden=8", "classifier_hidden=16", "epochs=1"]
    settings += ["num_workers=0", f"strides={strides}", "conv_blocks=2"]
    return subprocess.run([*command, *settings], capture_output=True, text=True, timeout=600)


def test_a_stride_too_large_for_the_labels_is_caught_before_training(long_transcripts, tmp_path):
    data = long_transcripts(10)  # half the train split
    refused = _train(data, tmp_path / "four", "[2,2]")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-2000:]
    assert "train: 10 of 20 utterances have fewer output frames at time stride 4" in errors[0]
    assert not (tmp_path / "four" / "checkpoints").exists()
    assert _train(data, tmp_path / "two", "[1,2]").returncode == 0  # half a phoneme a frame fits stride 2


def test_a_few_utterances_too_long_for_the_stride_are_named_and_training_goes_on(long_transcripts, tmp_path):
    result = _train(long_transcripts(1), tmp_path / "run", "[2,2]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "train: 1 of 20 utterances have fewer output frames at time stride 4 than CTC needs" in result.stderr
    )
    assert "(e.g. tr00000)" in result.stderr

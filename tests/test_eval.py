"""Evaluation: decoders against brute force, distributed decoding, submissions, leaderboards, watch."""

import itertools
import math
import multiprocessing
import subprocess
import sys
from pathlib import Path

import fsspec
import Levenshtein
import pytest
import torch

from eval import leaderboard
from eval.decode import CTCBeamDecoder, GreedyDecoder, collapse
from eval.main import _check_once
from eval.submission import read_labels, score
from pipeline.build import Settings, build
from tests.conftest import accelerate_launch
from tests.hw3p2_fixture import write_hw3p2
from train.checkpoint import epoch_folder

REPO = Path(__file__).resolve().parents[1]


def _labelling_log_probs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(labelling) for every labelling, summing over all alignments (brute force)."""
    frames, classes = log_probs.shape
    total: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        labels = tuple(collapse(path)[0])
        total[labels] = total.get(labels, 0.0) + math.exp(
            sum(float(log_probs[t, p]) for t, p in enumerate(path))
        )
    return {labels: math.log(p) for labels, p in total.items()}


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_finds_the_most_probable_labelling(seed):
    generator = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(6, 4, generator=generator) * 2).log_softmax(-1)
    truth = _labelling_log_probs(log_probs)
    decoder = CTCBeamDecoder(labels="_abc", beam_width=64, cutoff_top_n=4)
    (best,) = decoder.best(log_probs[None], torch.tensor([6]))[0]
    greedy = GreedyDecoder().best(log_probs[None], torch.tensor([6]))[0][0]
    # Invariant: the beam's labelling is the most probable one, and never less probable than greedy's
    assert tuple(best.labels) == max(truth, key=truth.get)
    assert truth[tuple(best.labels)] >= truth[tuple(greedy.labels)]


def test_narrow_beams_never_lose_to_greedy():
    generator = torch.Generator().manual_seed(5)
    for _ in range(10):
        log_probs = (torch.randn(6, 4, generator=generator) * 3).log_softmax(-1)
        truth = _labelling_log_probs(log_probs)
        greedy = GreedyDecoder().best(log_probs[None], torch.tensor([6]))[0][0]
        beam = CTCBeamDecoder(labels="_abc", beam_width=2, cutoff_top_n=4).best(
            log_probs[None], torch.tensor([6])
        )[0][0]
        assert truth[tuple(beam.labels)] >= truth[tuple(greedy.labels)] - 1e-9


def test_greedy_matches_a_straightforward_reference():
    generator = torch.Generator().manual_seed(1)
    log_probs = torch.randn(5, 40, 41, generator=generator).log_softmax(-1)
    lengths = torch.tensor([40, 33, 10, 1, 2])
    found = [h[0].labels for h in GreedyDecoder().best(log_probs, lengths)]
    for i, n in enumerate(lengths.tolist()):
        best = [int(log_probs[i, t].argmax()) for t in range(n)]
        expected = [c for t, c in enumerate(best) if c != 0 and (t == 0 or c != best[t - 1])]
        assert found[i] == expected


def test_ctcdecode_interface_and_process_pool():
    generator = torch.Generator().manual_seed(2)
    probs = torch.randn(4, 30, 41, generator=generator).log_softmax(-1)
    lengths = torch.tensor([30, 25, 12, 3])
    one = CTCBeamDecoder(beam_width=8, top_paths=2)
    pooled = CTCBeamDecoder(beam_width=8, top_paths=2, num_processes=2)
    results, scores, timesteps, out_lens = one.decode(probs, lengths)
    assert results.shape == (4, 2, 30) and scores.shape == (4, 2) and out_lens.shape == (4, 2)
    assert all(
        torch.equal(a, b)
        for a, b in zip((results, scores, timesteps, out_lens), pooled.decode(probs, lengths), strict=True)
    )
    pooled.close()
    # Invariant: scores are negative log-likelihoods, best first; timesteps rise within a labelling
    assert (scores[:, 0] <= scores[:, 1]).all()
    n = int(out_lens[0, 0])
    assert (timesteps[0, 0, 1:n] > timesteps[0, 0, : n - 1]).all()


def test_scorer_is_levenshtein_over_phoneme_map_strings(tmp_path):
    cases = {"a": (".hElO.", ".hElO."), "b": (".hElO.", ".hEl."), "c": ("", ".ab."), "d": (".ab.", "")}
    predictions = {k: p for k, (p, _) in cases.items()}
    solution = {k: s for k, (_, s) in cases.items()}
    distance, per, count = score(predictions, solution)
    expected = [Levenshtein.distance(p, s) for p, s in cases.values()]
    assert (distance, count) == (sum(expected) / 4, 4)
    assert per == sum(expected) / sum(len(s) for _, s in cases.values())
    with pytest.raises(ValueError, match="1 ids of the solution are missing"):
        score({"a": ".", "b": ".", "c": "."}, solution)
    path = tmp_path / "s.csv"
    path.write_text("id,label\nx,.a.\nx,.b.\n")
    with pytest.raises(ValueError, match="id 'x' appears twice"):
        read_labels(str(path))


def test_every_id_exactly_once_or_an_error():
    _check_once(["a", "b"], ["b", "a"], "split")
    with pytest.raises(RuntimeError, match="1 missing .*1 duplicated"):
        _check_once(["a", "a"], ["a", "b"], "split")


def _append_rows(args: tuple[str, int]) -> None:
    url, writer = args
    for i in range(25):
        leaderboard.append(url, {c: f"{writer}-{i}" if c == "run" else "0" for c in leaderboard.COLUMNS})


@pytest.mark.parametrize("where", ["local", "s3"])
def test_four_writers_lose_no_leaderboard_row(where, tmp_path, s3_bucket):
    url = f"{s3_bucket}/board.csv" if where == "s3" else str(tmp_path / "board.csv")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_rows, [(url, writer) for writer in range(4)])
    rows = leaderboard.read(url)
    assert len(rows) == 100 and len({r["run"] for r in rows}) == 100
    with fsspec.open(url, "rt") as handle:
        assert handle.read().count("time,run,") == 1  # one header, no torn or doubled file


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, str, Path]:
    """A tiny model trained for one epoch on random HW3P2-layout data, with a test solution file."""
    root = tmp_path_factory.mktemp("eval")
    raw = write_hw3p2(root / "raw", counts=(30, 8, 9), frames=(60, 200), seed=21)
    build(Settings(str(raw), str(root / "shards"), shard_mb=0.1))
    run = root / "runs" / "tiny"
    command = [
        sys.executable,
        str(REPO / "train" / "main.py"),
        "--data",
        str(root / "shards"),
        "--out",
        str(run),
    ]
    command += [
        "channels=16",
        "lstm_layers=1",
        "lstm_hidden=16",
        "classifier_hidden=32",
        "epochs=1",
        "num_workers=0",
    ]
    subprocess.run(command, check=True, capture_output=True)
    solution = root / "solution.csv"
    solution.write_text("id,label\n" + "".join(f"te{i:05d},.ab.\n" for i in range(9)))
    return str(root / "shards"), str(run / epoch_folder(0) / "model.pt"), solution


def _evaluate(trained, *extra: str) -> list[str]:
    data, model, _ = trained
    return [str(REPO / "eval" / "main.py"), "--checkpoint", model, "--data", data, *extra]


def test_two_processes_write_the_same_submission_as_one(trained, tmp_path):
    _, _, solution = trained
    common = [
        "--split",
        "test",
        "--beam",
        "4",
        "--solution",
        str(solution),
        "--leaderboard",
        str(tmp_path / "b.csv"),
    ]
    single = subprocess.run([sys.executable, *_evaluate(trained, *common, "--submission", str(tmp_path / "one.csv"))],
                            capture_output=True, text=True)  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    double = accelerate_launch(
        _evaluate(trained, *common, "--submission", str(tmp_path / "two.csv"), "--num-workers", "0")
    )
    assert double.returncode == 0, double.stderr[-2000:]
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    lines = (tmp_path / "one.csv").read_text().splitlines()
    # Invariant: the submission follows test_order.csv (the fixture lists ids in reverse)
    assert lines[0] == "id,predictions" and [row.split(",")[0] for row in lines[1:]] == [
        f"te{i:05d}" for i in reversed(range(9))
    ]
    rows = leaderboard.read(str(tmp_path / "b.csv"))
    assert len(rows) == 2 and rows[0]["distance"] == rows[1]["distance"] != ""


def test_missing_or_corrupt_checkpoint_is_named(trained, tmp_path):
    data, model, _ = trained
    broken = tmp_path / "model.pt"
    broken.write_bytes(Path(model).read_bytes()[:500])
    for checkpoint, message in (
        (str(tmp_path / "none.pt"), "checkpoint not found"),
        (str(broken), "not a readable checkpoint"),
    ):
        result = subprocess.run([sys.executable, str(REPO / "eval" / "main.py"), "--checkpoint", checkpoint, "--data", data],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 2 and f"{checkpoint}: {message}" in result.stderr


def test_watch_once_evaluates_only_new_checkpoints(trained, tmp_path):
    data, model, _ = trained
    runs = str(Path(model).parents[3])
    board = str(tmp_path / "board.csv")
    command = [
        sys.executable,
        "-m",
        "eval",
        "watch",
        "--runs",
        runs,
        "--data",
        data,
        "--leaderboard",
        board,
        "--beam",
        "1",
        "--once",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    assert [r["checkpoint"] for r in leaderboard.read(board)] == [model]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    assert len(leaderboard.read(board)) == 1  # nothing new, nothing evaluated

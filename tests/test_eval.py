"""Evaluation: decoders against brute force, distributed decoding, submissions, leaderboards, watch."""

import concurrent.futures
import csv
import html
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import fsspec
import Levenshtein
import numpy as np
import pytest
import torch

from eval import leaderboard, lm
from eval.decode import CTCBeamDecoder
from eval.main import _check_once
from eval.model import load_model
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.errors import UserError
from shards.kaggle import ids_name, read_labels
from shards.reader import BatchStream
from shards.store import STAGING
from shards.vocab import PHONEME_MAP, PHONEMES, to_string
from tests.conftest import accelerate_launch, launched, read_index, run_killed, why_failed
from tests.outage import CuttableProxy
from train.checkpoint import epoch_folder
from train.metric import greedy_decode, score

REPO = Path(__file__).resolve().parents[1]


def test_scorer_is_levenshtein_over_phoneme_map_strings():
    cases = {0: (".hElO.", ".hElO."), 1: (".hElO.", ".hEl."), 2: ("", ".ab."), 3: (".ab.", "")}
    predictions = {k: p for k, (p, _) in cases.items()}
    solution = {k: s for k, (_, s) in cases.items()}
    result = score(predictions, solution, "here")
    expected = [Levenshtein.distance(p, s) for p, s in cases.values()]
    assert (result.mean_distance, result.utterances) == (sum(expected) / 4, 4)
    assert result.per == sum(expected) / sum(len(s) for _, s in cases.values())
    with pytest.raises(UserError, match="here: 1 ids of the solution are missing"):
        score({0: ".", 1: ".", 2: "."}, solution, "here")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,predictions\n0,.ab.\n1,\n", {0: ".ab.", 1: ""}),  # Spring 2022 submission
        ("index,label\n1,.b.\n0,.a.\n", {0: ".a.", 1: ".b."}),  # later semesters, any row order
        ("id,label,Usage\n0,.a.,Public\n1,.b.,Private\n", {0: ".a.", 1: ".b."}),  # Kaggle solution
    ],
)
def test_kaggle_files_are_read_by_row_position(tmp_path, text, expected):
    path = tmp_path / "s.csv"
    path.write_text(text)
    assert read_labels(str(path)) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\n0,.a.\n0,.b.\n", "id 0 appears twice"),
        ("id,label\ntest-000016,.a.\n", "'test-000016' is not a row number"),
        ("id,label\n0,.a.,x\n", "line 2 has 3 columns, the header 2"),
        (
            "id,label,Usage\n0,.a.,Public\n1,.b.\n",
            "line 3 has 2 columns, the header 3",
        ),  # short, not only long
        ("id\n0\n", "at least two columns"),
        ("id\n0,.a.\n", "at least two columns"),  # the header decides, not the first row
    ],
)
def test_malformed_kaggle_files_are_named(tmp_path, text, message):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        read_labels(str(path))


@pytest.mark.parametrize(
    "submission, ids",
    [("out/submission.csv", "out/submission.ids.csv"), ("s3://b/run/sub", "s3://b/run/sub.ids.csv")],
)
def test_the_ids_file_sits_beside_the_submission(submission, ids):
    assert ids_name(submission) == ids


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
    solution.write_text("id,label\n" + "".join(f"{k},.ab.\n" for k in range(9)))  # Kaggle's: positions
    return str(root / "shards"), str(run / epoch_folder(0) / "model.pt"), solution


def _ranks(log: str) -> list[tuple[int, int]]:
    """(rank, world size) of every process that started, from eval's per-rank start-up line."""
    return sorted((int(r), int(w)) for r, w in re.findall(r" eval: rank (\d+) of (\d+) on ", log))


# for the tests of what an evaluation writes, not of how it decodes: greedy, no loader process
# (half of each run's time, and those tests run it a dozen times)
WRITES_ONLY = ["--beam", "1", "--num-workers", "0"]


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
    assert single.returncode == 0, why_failed(single.stderr)
    assert "%|" not in single.stderr  # not a terminal: progress as log lines, no tqdm bar
    double = accelerate_launch(
        _evaluate(trained, *common, "--submission", str(tmp_path / "two.csv"), "--num-workers", "0")
    )
    assert double.returncode == 0, why_failed(double.stderr)
    assert _ranks(single.stderr) == [(0, 1)] and _ranks(double.stderr) == [(0, 2), (1, 2)]  # two really ran
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    lines = (tmp_path / "one.csv").read_text().splitlines()
    # Invariant: Kaggle's ids are row positions; which utterance each is goes beside, in test_order.csv order
    assert lines[0] == "id,predictions" and [row.split(",")[0] for row in lines[1:]] == [
        str(k) for k in range(9)
    ]
    assert (tmp_path / "one.ids.csv").read_text().splitlines() == ["id,utterance"] + [
        f"{k},te{i:05d}" for k, i in enumerate(reversed(range(9)))
    ]
    rows = leaderboard.read(str(tmp_path / "b.csv"))
    assert len(rows) == 2 and rows[0]["distance"] == rows[1]["distance"] != ""


def test_an_evaluation_killed_at_any_step_of_its_writes_leaves_each_file_absent_or_complete(
    trained, tmp_path
):
    """kill -9 just before each file-system step under the output folder (tests/killpoint), so a kill
    lands inside every publish window on purpose; the uninterrupted run is the reference."""
    _, _, solution = trained
    outputs = ["--split", "test", *WRITES_ONLY, "--solution", str(solution)]

    def run(folder: Path, when: str) -> subprocess.CompletedProcess:
        script = _evaluate(trained, *outputs, "--submission", str(folder / "sub.csv"),
                           "--leaderboard", str(folder / "board.csv"))  # fmt: skip
        return run_killed([sys.executable, *script], folder, when)

    whole = tmp_path / "whole"
    reference = run(whole, "list")
    assert reference.returncode == 0, why_failed(reference.stderr)
    steps = re.findall(r"killpoint: step (\d+): (\S+)", reference.stderr)
    assert len(steps) >= 9, reference.stderr  # three files, each at least staged, written and renamed
    # every moment between two steps that change what is on disk: just before and just after each open
    # for writing (the file exists, nothing written yet), just before each rename (and so just after the
    # one before); the steps between (mkdir of the staging folder, the re-open to fsync) change nothing
    around = {"open-write": lambda k: [k, f"{k}+"], "os.rename": lambda k: [k]}
    moments = [when for k, event in steps for when in around.get(event, lambda k: [])(k)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        killed = list(pool.map(lambda when: run(tmp_path / f"killed{when}", when), moments))
    assert [k.returncode for k in killed] == [-signal.SIGKILL] * len(
        moments
    )  # each was killed, none finished
    states = []
    for when in moments:
        folder = tmp_path / f"killed{when}"
        visible = {p.name for p in folder.iterdir()} - {STAGING} if folder.exists() else set()
        # Invariant: each file is absent or complete, whenever the kill came
        assert visible <= {"sub.csv", "sub.ids.csv", "board.csv", "board.csv.lock"}, (when, visible)
        for name in visible & {"sub.csv", "sub.ids.csv", "board.csv"}:
            assert (folder / name).read_bytes() == (whole / name).read_bytes(), (when, name)
        states.append(visible - {"board.csv.lock"})
    # the kills landed between every two publishes: nothing, then one whole file more at a time
    assert [s for k, s in enumerate(states) if k == 0 or s != states[k - 1]] == [
        set(),
        {"sub.csv"},
        {"sub.csv", "sub.ids.csv"},
    ], states
    assert len(leaderboard.read(str(whole / "board.csv"))) == 1


def test_tune_scores_the_grid_on_all_ranks_as_on_one(trained, tmp_path):
    data, model, _ = trained
    lm.build(data, 2, str(tmp_path / "phones.arpa"))
    arguments = ["tune", "--checkpoint", model, "--data", data, "--lm", str(tmp_path / "phones.arpa"),
                 "--alpha", "0:0.5:0.5", "--beta", "0:2:1", "--beam", "8", "--num-workers", "0"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "eval", *arguments, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert one.returncode == 0, why_failed(one.stderr)
    two = accelerate_launch([str(REPO / "eval" / "__main__.py"), *arguments, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, why_failed(two.stderr)
    assert _ranks(one.stderr) == [(0, 1)] and _ranks(two.stderr) == [(0, 2), (1, 2)]
    table = list(csv.DictReader((tmp_path / "one" / "tune.csv").read_text().splitlines()))
    assert [(r["alpha"], r["beta"]) for r in table] == [
        (a, b) for a in ("0.0", "0.5") for b in ("0.0", "1.0", "2.0")
    ]
    # Invariant: the same figures whichever way the split was shared; the best is the table's minimum
    assert (tmp_path / "two" / "tune.csv").read_text() == (tmp_path / "one" / "tune.csv").read_text()
    best = json.loads(one.stdout.splitlines()[-1])["best"]
    assert float(best["distance"]) == min(float(r["distance"]) for r in table)
    assert (tmp_path / "one" / "tune.png").read_bytes()[:4] == b"\x89PNG"


def test_an_lm_at_alpha_0_beta_0_decodes_a_trained_model_exactly_as_no_lm(trained, tmp_path):
    """One search serves both: the LM row on the leaderboard measures the LM, not a change of search."""
    data, model_path, _ = trained
    lm.build(data, 3, str(tmp_path / "phones.arpa"))
    model, _ = load_model(model_path)
    plain = CTCBeamDecoder(PHONEME_MAP, beam_width=16, log_probs_input=True)
    with_lm = CTCBeamDecoder(
        PHONEME_MAP, str(tmp_path / "phones.arpa"), 0.0, 0.0, beam_width=16, log_probs_input=True
    )
    batches = 0
    with torch.no_grad():
        for batch in BatchStream(data, "dev"):
            log_probs, lengths = model(batch.features, batch.feature_lengths)
            expected = plain.decode(log_probs, lengths)
            assert all(
                torch.equal(a, b) for a, b in zip(expected, with_lm.decode(log_probs, lengths), strict=True)
            )
            assert int(expected[3][:, 0].sum()) > 0
            batches += 1
    assert batches > 0
    with_lm.reset_params(2.0, 0.0)  # and the LM is really there
    assert not torch.equal(with_lm.decode(log_probs, lengths)[0], expected[0])


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


def _shifted_stats(folder: Path) -> Path:
    """The dataset as if sharded with other statistics (another corpus's, or none applied)."""
    document = json.loads((folder / "stats.json").read_text())
    document["mean"] = [m + 0.5 for m in document["mean"]]
    (folder / "stats.json").write_text(json.dumps(document))
    return folder / "stats.json"


def _poisoned_stats(folder: Path) -> Path:
    document = json.loads((folder / "stats.json").read_text())
    document["m2"] = [float("nan")] * len(document["m2"])
    (folder / "stats.json").write_text(json.dumps(document))
    return folder / "stats.json"


def _truncated_test_shard(folder: Path) -> Path:
    victim = sorted((folder / "test").glob("shard-*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    return victim


@pytest.mark.parametrize(
    "damage, message",
    [
        (_shifted_stats, "normalised with other statistics than"),
        (_poisoned_stats, "statistics hold non-finite or negative values"),
        (_truncated_test_shard, "index.json says"),
    ],
    ids=["other-statistics", "poisoned-stats", "truncated-shard"],
)
def test_data_evaluation_cannot_trust_is_one_line_naming_it_and_writes_nothing(
    trained, tmp_path, damage, message
):
    data, _, solution = trained
    copy = tmp_path / "shards"
    shutil.copytree(data, copy)
    named = damage(copy)
    outputs = ["--split", "test", "--solution", str(solution), "--submission", str(tmp_path / "sub.csv")]
    result = subprocess.run([sys.executable, *_evaluate((str(copy), *trained[1:]), *outputs,
                             "--leaderboard", str(tmp_path / "board.csv"))], capture_output=True, text=True)  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, why_failed(result.stderr)
    assert len(errors) == 1 and str(named.parent if damage is _shifted_stats else named) in errors[0], errors
    assert message in errors[0], errors
    assert not (tmp_path / "sub.csv").exists() and not (tmp_path / "board.csv").exists()


def test_an_outage_at_the_submission_is_waited_out_and_past_the_io_deadline_named(
    trained, tmp_path, s3_bucket, s3_server
):
    """The link to the object store goes down just as the submission is PUT (the proxy cuts it on
    that request): waited out, the outputs are those of a run without one; past ``--io-deadline-s``
    it is one line naming the URL, and nothing is published."""
    _, _, solution = trained
    outputs = ["--split", "test", *WRITES_ONLY, "--solution", str(solution)]
    local = subprocess.run([sys.executable, *_evaluate(trained, *outputs, "--submission", str(tmp_path / "sub.csv"),
                            "--leaderboard", str(tmp_path / "board.csv"))], capture_output=True, text=True)  # fmt: skip
    assert local.returncode == 0, why_failed(local.stderr)
    proxy = CuttableProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    # botocore's own retries off: each attempt fails at once, so the project's retries are what is tested
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    bucket, fs = s3_bucket.removeprefix("s3://"), fsspec.filesystem("s3", skip_instance_cache=True)

    def evaluation(folder: str, deadline_s: int) -> list[str]:
        where = [
            "--submission",
            f"{s3_bucket}/{folder}/sub.csv",
            "--leaderboard",
            f"{s3_bucket}/{folder}/board.csv",
        ]
        return [sys.executable, *_evaluate(trained, *outputs, *where, "--io-deadline-s", str(deadline_s))]

    proxy.down_on(f"PUT /{bucket}/waited/sub.csv".encode())
    with launched(evaluation("waited", 300), env=env) as process:
        seen = []
        for line in process.stdout:  # the outage ends when the first retry is logged
            seen.append(line)
            if "retrying in" in line:
                proxy.up()
                break
        output = "".join(seen) + process.communicate(timeout=300)[0]
    assert process.returncode == 0, why_failed(output)
    retries = [line for line in output.splitlines() if "shards.retry" in line and "retrying in" in line]
    assert retries and all(f"{s3_bucket}/waited/sub.csv" in line for line in retries), why_failed(output)
    for name in ("sub.csv", "sub.ids.csv"):
        assert fs.cat_file(f"{s3_bucket}/waited/{name}") == (tmp_path / name).read_bytes()
    rows = leaderboard.read(f"{s3_bucket}/waited/board.csv")
    assert [row["distance"] for row in rows] == [leaderboard.read(str(tmp_path / "board.csv"))[0]["distance"]]

    proxy.down_on(f"PUT /{bucket}/broken/sub.csv".encode())
    broken = subprocess.run(evaluation("broken", 3), env=env, capture_output=True, text=True, timeout=300)
    proxy.up()
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert broken.returncode == 2 and len(errors) == 1 and "Traceback" not in broken.stderr, why_failed(
        broken.stderr
    )
    assert f"{s3_bucket}/broken/sub.csv: still failing after" in errors[0], errors
    fs.invalidate_cache()
    assert not fs.exists(f"{s3_bucket}/broken/sub.csv") and not fs.exists(f"{s3_bucket}/broken/board.csv")


def test_a_submission_in_the_later_semesters_index_label_format(trained, tmp_path):
    _, _, solution = trained
    outputs = ["--split", "test", "--solution", str(solution), "--format", "index,label"]
    result = subprocess.run([sys.executable, *_evaluate(trained, *outputs, "--submission", str(tmp_path / "sub.csv"),
                             "--leaderboard", str(tmp_path / "board.csv"))], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, why_failed(result.stderr)
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[0] == "index,label" and [line.split(",")[0] for line in lines[1:]] == [
        str(k) for k in range(9)
    ]
    # the file reads back as the predictions the board scored
    scored = score(read_labels(str(tmp_path / "sub.csv")), read_labels(str(solution)), "sub.csv")
    assert float(leaderboard.read(str(tmp_path / "board.csv"))[0]["distance"]) == round(
        scored.mean_distance, 4
    )


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
    page = tmp_path / "board.html"
    subprocess.run([*command, "--html", str(page)], check=True, capture_output=True, cwd=REPO)
    assert [r["checkpoint"] for r in leaderboard.read(board)] == [model]
    assert html.escape(model) in page.read_text()  # the page follows each new row
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    assert len(leaderboard.read(board)) == 1  # nothing new, nothing evaluated
    lm.build(data, 2, str(tmp_path / "phones.arpa"))
    with_lm = [*command[:-3], "--beam", "4", "--lm", str(tmp_path / "phones.arpa"), "--alpha", "0.5", "--beta", "1", "--once"]  # fmt: skip
    for _ in range(2):  # the same checkpoint with an LM is another row, once
        subprocess.run(with_lm, check=True, capture_output=True, cwd=REPO)
    rows = leaderboard.read(board)
    assert [(r["beam"], r["lm"], r["alpha"], r["beta"]) for r in rows] == [
        ("1", "", "", ""),
        ("4", str(tmp_path / "phones.arpa"), "0.5", "1.0"),
    ]


def test_submission_row_k_is_the_prediction_for_the_kth_listed_file(trained, tmp_path):
    """Ids that sort differently from test_order.csv (commas, spaces, a shuffle) and a rejected utterance."""
    data, model, _ = trained
    raw = write_hw3p2(tmp_path / "raw", counts=(1, 1, 12), frames=(60, 200), seed=33, front_end_seed=21)
    mfcc = raw / "test" / "mfcc"
    names = sorted(p.stem for p in mfcc.glob("*.npy"))
    renamed = {names[0]: "b, with a comma", names[1]: "a with spaces", names[2]: 'q"uote'}
    for old, new in renamed.items():
        (mfcc / f"{old}.npy").rename(mfcc / f"{new}.npy")
    ids = [renamed.get(n, n) for n in names]
    (mfcc / f"{ids[3]}.npy").write_bytes(b"\x93NUMPY broken")  # rejected, but still listed
    order = [ids[i] for i in torch.randperm(len(ids), generator=torch.Generator().manual_seed(3)).tolist()]
    (raw / "test" / "test_order.csv").write_bytes(kaggle_order_csv(order))
    shards = tmp_path / "shards"
    build(Settings(str(raw), str(shards), stats=f"{data}/stats.json", max_reject_fraction=0.5))
    submission, board = tmp_path / "sub.csv", tmp_path / "board.csv"
    command = [
        *_evaluate(trained, "--beam", "1", "--submission", str(submission)),
        "--leaderboard",
        str(board),
    ]
    command[command.index(data)] = str(shards)
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    assert result.returncode == 0, why_failed(result.stderr)
    expected = _greedy_one_by_one(model, str(shards))
    assert len(set(expected.values())) > 3  # the check below could not tell rows apart otherwise
    rows = list(csv.reader(io.StringIO(submission.read_text(), newline="")))
    # Invariant: Kaggle's file: one row per listed file, row k = position k = the k-th file's prediction
    assert rows[0] == ["id", "predictions"] and len(rows) == len(order) + 1
    for k, (row, utterance) in enumerate(zip(rows[1:], order, strict=True)):
        assert row == [str(k), expected.get(utterance, "")]
    mapping = list(csv.reader(io.StringIO((tmp_path / "sub.ids.csv").read_text(), newline="")))
    assert mapping == [["id", "utterance"]] + [[str(k), i] for k, i in enumerate(order)]
    # the rejected utterance keeps its row (empty), is named in a warning and counted on the board
    assert ids[3] not in expected and f"{ids[3]} (unreadable .npy" in result.stderr
    assert leaderboard.read(str(board))[0]["rejected"] == "1"


def kaggle_order_csv(ids: list[str]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file"])
    writer.writerows([f"{i}.npy"] for i in ids)
    return text.getvalue().encode()


def _greedy_one_by_one(model_url: str, data: str) -> dict[str, str]:
    """Each test utterance decoded on its own, straight from the shards: id → PHONEME_MAP string."""
    model, _ = load_model(model_url)
    found = {}
    with torch.no_grad():
        for entry in read_index(data, "test").shards:
            with (
                fsspec.open(f"{data}/test/{entry.name}", "rb") as handle,
                tarfile.open(fileobj=io.BytesIO(handle.read())) as archive,
            ):
                members = {m.name: archive.extractfile(m).read() for m in archive}
            for name in (n for n in members if n.endswith(".id.txt")):
                key = name.split(".")[0]
                features = np.load(io.BytesIO(members[f"{key}.feats.npy"]))
                log_probs, lengths = model(torch.from_numpy(features)[None], torch.tensor([len(features)]))
                found[members[name].decode()] = to_string(greedy_decode(log_probs, lengths)[0])
    return found


@pytest.mark.parametrize("where", ["local", "s3"])
def test_leaderboard_cells_are_never_formulas_and_read_back_unchanged(where, tmp_path, s3_bucket):
    url = f"{s3_bucket}/board.csv" if where == "s3" else str(tmp_path / "board.csv")
    names = [
        '=HYPERLINK("http://x","y")',
        "+1",
        "-2",
        "@SUM(A1)",
        "\tx",
        "\rcr",
        "line\r\nbreak",
        "'=quoted",
        "'plain",
    ]
    for name in names:
        leaderboard.append(url, {c: name if c == "run" else "1" for c in leaderboard.COLUMNS})
    with fsspec.open(url, "rb") as handle:
        cells = [row[1] for row in csv.reader(io.StringIO(handle.read().decode(), newline=""))][1:]
    # Invariant: no stored cell starts with what a spreadsheet evaluates (OWASP: prefix a quote)
    assert not [c for c in cells if c[:1] in "=+-@\t\r"]
    # Invariant: reading gives every name back exactly, CR and quotes included
    assert [r["run"] for r in leaderboard.read(url)] == names


def test_a_board_edited_by_hand_reads_back_as_written(tmp_path):
    """Only the quote this project put before a formula is taken off: a cell someone typed
    (a formula, a tab) is read as it stands."""
    board = tmp_path / "board.csv"
    typed = ["=1+1", "\tnote", "'quoted by hand"]
    rows = [",".join(leaderboard.COLUMNS)] + [
        ",".join([value] + ["1"] * (len(leaderboard.COLUMNS) - 1)) for value in typed
    ]
    board.write_text("\r\n".join(rows) + "\r\n")
    assert [r["time"] for r in leaderboard.read(str(board))] == typed


def test_leaderboard_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "board.csv.lock").symlink_to(target)
    with pytest.raises(UserError, match="lock file is a symbolic link"):
        leaderboard.append(str(tmp_path / "board.csv"), dict.fromkeys(leaderboard.COLUMNS, "1"))
    assert target.read_text() == "keep me"


def test_an_older_leaderboard_file_stays_readable_and_gains_the_new_columns(tmp_path):
    board = tmp_path / "board.csv"
    old_columns = leaderboard.COLUMNS[: leaderboard.COLUMNS.index("rejected")]  # before rejected and the LM
    board.write_text(",".join(old_columns) + "\n" + ",".join(["old"] * len(old_columns)) + "\n")
    old = leaderboard.read(str(board))[0]
    assert all(old[c] == "" for c in ("rejected", "lm", "alpha", "beta"))
    leaderboard.append(str(board), dict.fromkeys(leaderboard.COLUMNS, "new"))
    rows = leaderboard.read(str(board))
    assert [r["run"] for r in rows] == ["old", "new"] and rows[1]["rejected"] == rows[1]["beta"] == "new"
    assert board.read_text().splitlines()[0] == ",".join(leaderboard.COLUMNS)


def test_the_board_ranks_lowest_distance_first_unscored_last_and_reads_empty_before_any_row(
    tmp_path, s3_bucket
):
    rows = [
        {"run": "unscored", "distance": "", "time": "1"},  # the test split: no solution to score with
        {"run": "worse", "distance": "10.5", "time": "2"},
        {"run": "best, later", "distance": "2.0", "time": "4"},
        {"run": "best", "distance": "2.0", "time": "3"},
        {"run": "nine", "distance": "9", "time": "5"},  # numbers, not strings: 9 < 10.5
    ]
    assert [r["run"] for r in leaderboard.ranked(rows)] == [
        "best",
        "best, later",
        "nine",
        "worse",
        "unscored",
    ]
    assert leaderboard.read(str(tmp_path / "none.csv")) == []
    assert leaderboard.read(f"{s3_bucket}/none.csv") == []
    nested = f"{s3_bucket}/boards/medium/board.csv"  # a key below folders, not at the bucket's root
    leaderboard.append(nested, dict.fromkeys(leaderboard.COLUMNS, "1"))
    assert [r["run"] for r in leaderboard.read(nested)] == ["1"]
    leaderboard.append(str(tmp_path / "board.csv"), dict.fromkeys(leaderboard.COLUMNS, "1"))
    lock = tmp_path / "board.csv.lock"
    assert not lock.stat().st_mode & 0o111, "the lock file is data, never executable"


def test_transcribe_gives_what_evaluation_gives_for_the_same_files(trained, tmp_path):
    data, model, _ = trained
    submission = tmp_path / "sub.csv"
    evaluated = subprocess.run([sys.executable, *_evaluate(trained, "--split", "test", "--beam", "4", "--submission",
                                str(submission))], capture_output=True, text=True)  # fmt: skip
    assert evaluated.returncode == 0, why_failed(evaluated.stderr)
    utterances = dict(row.split(",") for row in (tmp_path / "sub.ids.csv").read_text().splitlines()[1:])
    expected = {utterances[str(k)]: p for k, p in read_labels(str(submission)).items()}
    folder = Path(data).parent / "raw" / "test" / "mfcc"
    result = subprocess.run([sys.executable, "-m", "eval", "transcribe", "--checkpoint", model, "--beam", "4",
                             "--format", "jsonl", str(folder)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, why_failed(result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["input"].removesuffix(".npy"): r["string"] for r in records} == expected and len(records) == 9
    for record in records:
        assert record["phonemes"].split() == [PHONEMES[PHONEME_MAP.index(c)] for c in record["string"]]
        assert len(record["frames"]) == len(record["string"]) and record["score"] > 0
        assert all(0 <= frame < 200 for frame in record["frames"])  # input frames (the fixture's are < 200)
    text = subprocess.run([sys.executable, "-m", "eval", "transcribe", "--checkpoint", model, "--beam", "1",
                           str(folder / "te00003.npy")], capture_output=True, text=True, check=True)  # fmt: skip
    name, phonemes = text.stdout.rstrip("\n").split("\t")
    assert name == "te00003.npy" and set(phonemes.split()) <= set(PHONEMES[1:])


def test_transcribe_names_each_bad_input_and_transcribes_the_others(trained, tmp_path):
    data, model, _ = trained
    good = Path(data).parent / "raw" / "test" / "mfcc" / "te00000.npy"
    bad = {
        "missing.npy": None,
        "text.npy": b"not an array",
        "narrow.npy": np.zeros((50, 12), np.float32),
        "empty.npy": np.zeros((0, 13), np.float32),
        "nan.npy": np.full((50, 13), np.nan, np.float32),
    }
    for name, content in bad.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif content is not None:
            np.save(tmp_path / name, content)
    result = subprocess.run([sys.executable, "-m", "eval", "transcribe", "--checkpoint", model, "--beam", "1",
                             str(good), *(str(tmp_path / n) for n in bad)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["te00000.npy"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    reasons = {"missing.npy": "unreadable", "text.npy": "NUMPY", "narrow.npy": "12 coefficients per frame, the "
               "model takes 13", "empty.npy": "zero frames", "nan.npy": "non-finite"}  # fmt: skip
    assert len(errors) == len(bad)
    for name, reason in reasons.items():
        assert any(f"{tmp_path / name}: " in line and reason in line for line in errors), (name, errors)

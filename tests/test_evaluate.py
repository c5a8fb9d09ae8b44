"""eval/evaluate.py: distributed evaluation of a checkpoint: submissions, scores, rows, and its refusals."""

import concurrent.futures
import csv
import io
import json
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
from eval.evaluate import check_once
from eval.model import load_model
from loopback.processes import launched
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.kaggle import public_rows, read_labels
from shards.reader import BatchStream
from shards.store import STAGING
from shards.vocab import PHONEME_MAP, to_string
from tests.outage import CuttableProxy
from tests.processes import (
    REPO,
    accelerate_launch,
    evaluated,
    evaluation_command,
    run_killed,
    started_ranks,
    why_failed,
)
from tests.written import read_index
from train.metric import greedy_decode, score


def test_every_id_exactly_once_or_an_error():
    check_once(["a", "b"], ["b", "a"], "split")
    with pytest.raises(RuntimeError, match="1 missing .*1 duplicated"):
        check_once(["a", "a"], ["a", "b"], "split")


# for the tests of what an evaluation writes, not of how it decodes: greedy, no loader process
# (half of each run's time, and those tests run it a dozen times)
WRITES_ONLY = ["--beam", "1", "--num-workers", "0"]


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
    single = evaluated(trained, *common, "--submission", str(tmp_path / "one.csv"))
    assert single.returncode == 0, why_failed(single.stderr)
    assert "%|" not in single.stderr  # not a terminal: progress as log lines, no tqdm bar
    double = accelerate_launch(
        evaluation_command(trained, *common, "--submission", str(tmp_path / "two.csv"), "--num-workers", "0")
    )
    assert double.returncode == 0, why_failed(double.stderr)
    assert started_ranks(single.stderr) == [(0, 1)] and started_ranks(double.stderr) == [
        (0, 2),
        (1, 2),
    ]  # two really ran
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
        script = evaluation_command(
            trained,
            *outputs,
            "--submission",
            str(folder / "sub.csv"),
            "--leaderboard",
            str(folder / "board.csv"),
        )
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
        result = subprocess.run(
            [sys.executable, str(REPO / "eval" / "main.py"), "--checkpoint", checkpoint, "--data", data],
            capture_output=True,
            text=True,
        )
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
    result = evaluated((str(copy), *trained[1:]), *outputs, "--leaderboard", str(tmp_path / "board.csv"))
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
    local = evaluated(
        trained,
        *outputs,
        "--submission",
        str(tmp_path / "sub.csv"),
        "--leaderboard",
        str(tmp_path / "board.csv"),
    )
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
        return [
            sys.executable,
            *evaluation_command(trained, *outputs, *where, "--io-deadline-s", str(deadline_s)),
        ]

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
    result = evaluated(
        trained,
        *outputs,
        "--submission",
        str(tmp_path / "sub.csv"),
        "--leaderboard",
        str(tmp_path / "board.csv"),
    )
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
        *evaluation_command(trained, "--beam", "1", "--submission", str(submission)),
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


def test_a_solution_scores_kaggles_public_board_and_its_private_rest_apart(trained, tmp_path):
    _, _, solution = trained
    submission = tmp_path / "sub.csv"
    result = evaluated(
        trained, "--split", "test", *WRITES_ONLY, "--solution", str(solution), "--submission", str(submission)
    )
    assert result.returncode == 0, why_failed(result.stderr)
    row = json.loads(result.stdout.splitlines()[-1])
    predictions, references = read_labels(str(submission)), read_labels(str(solution))
    public = public_rows(list(references))
    assert len(public) == round(0.3 * len(references)) == 3

    def mean(rows: set[int]) -> float:
        return round(sum(Levenshtein.distance(predictions[k], references[k]) for k in rows) / len(rows), 4)

    assert row["public_distance"] == mean(public) and row["private_distance"] == mean(
        set(references) - public
    )
    assert row["distance"] == mean(set(references))

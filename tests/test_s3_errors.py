"""Object-store mistakes end in one line naming the URL, what failed and what to check, with exit 2.

Each case against the real test S3 server (SeaweedFS on loopback), in every command that takes
an s3:// URL. The missing-endpoint case routes requests through a closed proxy port on
loopback, so nothing leaves this machine while the client believes it is talking to AWS.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.synthetic import write_hw3p2
from tests.processes import why_failed

REPO = Path(__file__).resolve().parents[1]
SECRET = "wrong-secret-do-not-print"

CASES = {
    "wrong secret": (
        {"AWS_SECRET_ACCESS_KEY": SECRET},
        "refused the secret key: check AWS_SECRET_ACCESS_KEY",
    ),
    "missing bucket": ({}, "the bucket does not exist at http://127.0.0.1:"),
    "unreachable endpoint": (
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
        "cannot reach the S3 endpoint http://127.0.0.1:9",
    ),
    "no endpoint set": (
        {"AWS_ENDPOINT_URL": None, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"},
        "cannot reach the S3 endpoint Amazon S3 (AWS_ENDPOINT_URL is not set; for another S3 server",
    ),
}


def _commands(bucket: str, raw: Path) -> dict[str, list[str]]:
    data, run = f"{bucket}/ds", f"{bucket}/run"
    return {
        "pipeline": ["-m", "pipeline", "--src", str(raw), "--dst", data, "--workers", "1"],
        "shards plan": ["-m", "shards", "plan", data],
        "train": [str(REPO / "train" / "main.py"), "--data", data, "--out", run, "epochs=1"],
        "eval": [str(REPO / "eval" / "main.py"), "--checkpoint", run, "--data", data],
        "eval score": ["-m", "eval", "score", f"{bucket}/submission.csv", f"{bucket}/solution.csv"],
        "eval leaderboard": ["-m", "eval", "leaderboard", f"{bucket}/board.csv"],
        "eval watch": [
            "-m",
            "eval",
            "watch",
            "--runs",
            f"{bucket}/runs",
            "--data",
            data,
            "--leaderboard",
            f"{bucket}/board.csv",
            "--once",
        ],
        "eval tune": [
            "-m",
            "eval",
            "tune",
            "--checkpoint",
            run,
            "--data",
            data,
            "--lm",
            f"{bucket}/lm.arpa",
            "--out",
            f"{bucket}/tune",
        ],
        "eval lm": ["-m", "eval", "lm", "--data", data, "--out", f"{bucket}/lm.arpa"],
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(6, 2, 2), seed=9)


def _pairs() -> list:
    """Every (command, mistake). make test (CI) runs each command under one mistake, the mistakes taken
    in turn so each meets at least two commands; make test-all runs them all."""
    cases = list(CASES)
    return [
        pytest.param(command, case, marks=() if k % len(cases) == cases.index(case) else pytest.mark.slow)
        for k, command in enumerate(_commands("s3://b", Path("raw")))
        for case in cases
    ]


@pytest.mark.parametrize(("command", "case"), _pairs())
def test_s3_mistakes_are_one_line_with_exit_2(command, case, s3_bucket, raw):
    change, expected = CASES[case]
    bucket = "s3://no-such-bucket-here" if case == "missing bucket" else s3_bucket
    env = {**os.environ, **{k: v for k, v in change.items() if v is not None}}
    for key in (k for k, v in change.items() if v is None):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, *_commands(bucket, raw)[command]],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, why_failed(result.stderr)
    assert "Traceback" not in result.stderr and len(errors) == 1, why_failed(result.stderr)
    assert errors[0].startswith(f"error: {bucket}/") and expected in errors[0]
    assert SECRET not in result.stdout + result.stderr

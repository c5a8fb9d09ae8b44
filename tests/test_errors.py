"""One family of errors for what a user can fix: each command prints it as one ``error:`` line and
exits 2; anything else is a bug, which keeps its traceback (exit 1). Tested both ways."""

import subprocess
import sys
from pathlib import Path

import pytest

from eval.arpa import ArpaError
from eval.token_lm import LMError
from eval.transcribe import FeatureShiftRefused
from pipeline.build import FeatureShiftError, PipelineError, Settings, TooManyRejects, build
from pipeline.corpus.voices import VoiceUnavailable
from pipeline.layout import LayoutError
from pipeline.runner import ClusterError, WorkerFailed
from pipeline.source import InputChanged
from pipeline.synthetic import write_hw3p2
from shards import s3
from shards.errors import MissingInput, UserError
from shards.kaggle import KaggleFormatError
from shards.manifest import DatasetError
from shards.reader import LoaderStartError
from shards.retry import StillFailing
from shards.shard_file import CorruptShard
from shards.vocab import TranscriptError
from train.checkpoint import CheckpointError
from train.config import ConfigError
from train.hardware import DeviceError
from train.rendezvous import JoinTimeout
from train.together import FailedOnRank0

USER_FIXABLE = [
    ArpaError,
    LMError,
    FeatureShiftRefused,
    FeatureShiftError,
    PipelineError,
    TooManyRejects,
    VoiceUnavailable,
    LayoutError,
    ClusterError,
    WorkerFailed,
    InputChanged,
    MissingInput,
    DatasetError,
    LoaderStartError,
    CorruptShard,
    KaggleFormatError,
    CheckpointError,
    FailedOnRank0,
    ConfigError,
    DeviceError,
    JoinTimeout,
]


@pytest.mark.parametrize("kind", USER_FIXABLE, ids=lambda kind: kind.__name__)
def test_a_users_mistake_is_one_line(kind):
    assert issubclass(kind, UserError)
    assert s3.refusal(kind("data/x.npy: the problem"), []) == "data/x.npy: the problem"


def test_a_bad_transcript_is_one_line_naming_its_file():
    assert (
        s3.refusal(TranscriptError("t/x.npy", "unknown phoneme 'QQ'"), []) == "t/x.npy: unknown phoneme 'QQ'"
    )


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError("data/x.npy: not found"), StillFailing("s3://b/k", 60, "connection reset")],
    ids=["missing file", "outage past its retries"],
)
def test_a_missing_file_or_a_lasting_outage_is_one_line(error):
    assert s3.refusal(error, []) == str(error)


@pytest.mark.parametrize("bug", [ValueError("x"), RuntimeError("x"), KeyError("x"), TypeError("x")])
def test_anything_else_is_a_bug(bug):
    assert s3.refusal(bug, []) is None


# Each command: (module whose main runs, a function on its path that a bug is injected into, arguments)
COMMANDS = {
    "pipeline": ("pipeline.__main__", "pipeline.build.discover", ["--src", "{raw}", "--dst", "{tmp}/out"]),
    "train": ("train.main", "train.main.read_dataset_stats", ["--data", "{shards}", "--out", "{tmp}/run"]),
    "evaluate": (
        "eval.main",
        "eval.ensemble.model_url",
        ["--checkpoint", "{tmp}/none", "--data", "{shards}"],
    ),
    "score": ("eval.cli", "eval.score.read_labels", ["score", "{tmp}/a.csv", "{tmp}/b.csv"]),
    "leaderboard": ("eval.cli", "eval.leaderboard._parse", ["leaderboard", "{tmp}/b.csv"]),
    "lm": ("eval.cli", "eval.lm.label_sequences", ["lm", "--data", "{tmp}/none", "--out", "{tmp}/lm.arpa"]),
    "transcribe": (
        "eval.cli",
        "eval.ensemble.load_model",
        ["transcribe", "--checkpoint", "{tmp}/none.pt", "{tmp}/a.csv"],
    ),
    "plan": ("shards.__main__", "shards.__main__.read_split_metadata", ["plan", "{shards}"]),
    "ablate": (
        "train.ablate",
        "train.ablate.load_config",
        ["--data", "{shards}", "--out", "{tmp}/ab", "--vary", "lr=-1"],
    ),
    "corpus": ("pipeline.corpus.__main__", "pipeline.corpus.__main__.generate", ["--dst", "{tmp}/corpus"]),
}
_RUN = """
import importlib, sys
module_name, target, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if target != "-":
    owner, _, name = target.rpartition(".")
    def injected(*args, **kwargs):
        raise ValueError("injected bug")
    setattr(importlib.import_module(owner), name, injected)
sys.exit(importlib.import_module(module_name).main(argv))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("errors")
    raw = write_hw3p2(tmp / "raw", counts=(8, 2, 2), frames=(40, 80))
    build(Settings(str(raw), str(tmp / "shards")))
    (tmp / "a.csv").write_text("id,label\n0,ab\n")
    (tmp / "b.csv").write_text("not a solution\n")
    return {"raw": str(raw), "shards": str(tmp / "shards"), "tmp": str(tmp)}


def _run(command: str, data: dict[str, str], inject: bool) -> subprocess.CompletedProcess:
    module, target, argv = COMMANDS[command]
    argv = [a.format(**data) for a in argv]
    return subprocess.run(
        [sys.executable, "-c", _RUN, module, target if inject else "-", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_shows_a_bugs_traceback(command, data):
    result = _run(command, data, inject=True)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "ValueError: injected bug" in result.stderr
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())


@pytest.mark.parametrize(
    "command, named",
    [
        ("evaluate", "{tmp}/none"),
        ("score", "{tmp}/b.csv"),
        ("leaderboard", "{tmp}/b.csv"),
        ("lm", "{tmp}/none"),
        ("transcribe", "{tmp}/none.pt"),
        ("ablate", "lr=-1.0: allowed: > 0"),
    ],
)
def test_each_command_gives_a_users_mistake_one_line(command, named, data):
    result = _run(command, data, inject=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and named.format(**data) in errors[0], errors

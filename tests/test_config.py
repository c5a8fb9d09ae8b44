"""Settings are validated as a whole: one line per problem naming the key, the value and what is allowed."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from shards.store import Store
from tests.checkpoints import training_state
from train import checkpoint
from train.config import ConfigError, TrainConfig, load_config, setting_rule

REPO = Path(__file__).resolve().parents[1]


def _train_main(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train" / "main.py"), "--data", "x", "--out", "y", *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_every_setting_has_a_rule_on_its_field():
    """A number carries its Range, a string its choices; only true/false is all type."""
    for setting in dataclasses.fields(TrainConfig):
        kind, allowed = setting_rule(setting.name)
        assert allowed is not None or kind is bool, f"{setting.name} has no rule"
        assert kind in (int, float, str, bool, list), setting.name


@pytest.mark.parametrize(
    "override, line",
    [
        ("epochs=abc", "epochs='abc': expected an integer"),
        ("epochs=-5", "epochs=-5: allowed: ≥ 1"),
        ("lr=nan", "lr=nan: expected a finite number"),
        ("lr=0", "lr=0.0: allowed: > 0"),
        ("max_frames=0", "max_frames=0: allowed: ≥ 1"),
        ("grad_accum=0", "grad_accum=0: allowed: ≥ 1"),
        ("noise_prob=9", "noise_prob=9.0: allowed: ≥ 0 and ≤ 1"),
        ("num_workers=-1", "num_workers=-1: allowed: ≥ 0"),
        ("keep_last=0", "keep_last=0: allowed: ≥ 1"),
        ("scheduler=linear", "scheduler='linear': allowed: plateau, cosine"),
        ("bf16=maybe", "bf16='maybe': expected true or false (now precision: auto, bf16, fp16, fp32)"),
        ("precision=half", "precision='half': allowed: auto, bf16, fp16, fp32"),
        ("device=tpu", "device='tpu': allowed: auto, cuda, cpu"),
        ("strides=[2,4]", "strides=[2, 4]: time stride 8; allowed: at most 4"),
        ("strides=[3,1]", "strides=[3, 1]: each 1, 2 or 4"),
        ("lstm_dropout=1", "lstm_dropout=1.0: allowed: ≥ 0 and < 1"),
        ("colour=blue", "colour: unknown setting"),
        ("epochs", "'epochs': expected key=value"),
    ],
)
def test_a_bad_override_names_the_key_value_and_what_is_allowed(override, line):
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "train" / "configs" / "cpu.yaml", [override])
    # Invariant: one line, which says it (an unknown key's goes on to list the known ones)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines


@pytest.mark.parametrize(
    "text, line",
    [
        ("epochs: true\n", "epochs=True: expected an integer, not true/false"),
        ("epochs: 2.5\n", "epochs=2.5: expected an integer"),
        ("lr: '1e-3'\n", "lr='1e-3': expected a finite number"),
        ("strides: 2\n", "strides=2: expected a list of integers"),
    ],
)
def test_a_bad_yaml_value_is_named(tmp_path, text, line):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=line.replace("[", r"\[").replace("(", r"\(")):
        load_config(path, [])


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["epochs=0", "lr=-1", "noise_kind=pink"])
    assert len(str(caught.value).splitlines()) == 3


def test_yaml_values_of_the_right_type_load():
    config = load_config(
        REPO / "train" / "configs" / "medium.yaml", ["lr=1e-3", "strides=[1,4]", "precision=fp16"]
    )
    assert (config.lr, config.strides, config.precision) == (1e-3, [1, 4], "fp16")
    assert isinstance(load_config(None, ["weight_decay=0"]).weight_decay, float)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "!!python/object/apply:os.system ['echo owned']\n",
            "not a valid settings file (line 1, column 1): could not determine a constructor",
        ),
        ("epochs: [1,\n", "not a valid settings file (line 2, column 1)"),
        ("- epochs\n", "expected a mapping of settings"),
    ],
)
def test_hostile_or_broken_yaml_is_one_line_and_exit_2(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = _train_main("--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr and "owned" not in result.stdout


def test_bad_overrides_exit_2_with_one_line_each(tmp_path):
    result = _train_main("epochs=abc", "lr=nan")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: epochs='abc': expected an integer",
        "error: lr=nan: expected a finite number",
    ]


def test_latest_checkpoint_is_never_removed(tmp_path):
    store = Store(str(tmp_path))
    best = checkpoint.epoch_folder(0)

    def card(epoch: int, step: int) -> checkpoint.ModelCard:
        return checkpoint.ModelCard({}, {}, 13, {}, epoch=epoch, step=step, dev_distance=None)

    for epoch in range(3):
        checkpoint.save(
            store, checkpoint.epoch_folder(epoch), training_state(epoch), card(epoch, epoch), 0, best
        )
    checkpoint.save(store, checkpoint.step_folder(7), training_state(7), card(2, 7), 0, best)
    # Invariant: latest.json names a folder that exists, whatever keep_last says
    assert checkpoint.load(checkpoint.latest(str(tmp_path), "state.pt"))["step"] == 7
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*-*")) == ["epoch-0000", "step-00000007"]


def test_a_resume_may_change_only_what_leaves_the_trajectory_alone():
    saved = dataclasses.asdict(TrainConfig())
    monitoring = saved | {"report_to": "none", "log_every_steps": 7, "num_workers": 0, "keep_last": 9}
    assert checkpoint.differences(saved, monitoring) == []
    assert checkpoint.differences(saved, saved | {"lr": 1e-3}) == ["lr: 0.002 → 0.001"]


def test_the_bf16_setting_of_earlier_versions_still_loads_as_precision(tmp_path):
    """YAML files, overrides and checkpoints written with ``bf16`` keep working."""
    from train.checkpoint import differences
    from train.config import upgraded

    path = tmp_path / "old.yaml"
    path.write_text("bf16: false\n")
    assert load_config(path, []).precision == "fp32"
    path.write_text("bf16: true\n")
    assert load_config(path, []).precision == "auto"
    assert load_config(None, ["bf16=false"]).precision == "fp32"
    assert upgraded({"bf16": True, "lr": 1.0}) == {"precision": "auto", "lr": 1.0}
    saved = dataclasses.asdict(TrainConfig()) | {"bf16": True}
    del saved["precision"]
    assert differences(saved, dataclasses.asdict(TrainConfig())) == []  # a checkpoint of before resumes


def test_loading_a_config_imports_neither_torch_nor_webdataset():
    """The settings, their defaults and their rules live where nothing heavy is imported: a tool that
    only reads or checks a config (ablations, a notebook) pays neither torch's import nor the reader's
    webdataset registration."""
    code = (
        "import sys\n"
        "from train.config import load_config\n"
        "load_config(None, ['precision=bf16', 'device=cpu', 'max_frames=1000'])\n"
        "print(sorted(m for m in ('torch', 'webdataset', 'shards.reader') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-3\nstrides: [1, 2]\nepochs: 3\n")
    config = load_config(path, ["epochs=5", "strides=[2,2]", "precision=fp32", "lr=5e-4"])
    assert (config.epochs, config.strides, config.precision, config.lr, config.lstm_layers) == (
        5,
        [2, 2],
        "fp32",
        5e-4,
        4,
    )
    with pytest.raises(ValueError, match="learning_rate: unknown setting"):
        path.write_text("learning_rate: 1\n")
        load_config(path, [])
    with pytest.raises(ValueError, match="time stride 8; allowed: at most 4"):
        load_config(None, ["conv_blocks=3", "strides=[2,2,2]"])
    with pytest.raises(ValueError, match="epoch: unknown setting"):
        load_config(None, ["epoch=3"])

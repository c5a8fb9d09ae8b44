"""Training end to end: real processes, real shards, checkpoints and exact resumption."""

import csv
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from tests import host_syncs
from tests.processes import accelerate_command, accelerate_launch, greedy_dev_row, kill_when, why_failed
from train import checkpoint, main, monitor
from train.preemption import SIGNALS

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "channels=16",
    "lstm_layers=2",
    "lstm_hidden=16",
    "classifier_hidden=32",
    "max_frames=4000",
    "num_workers=0",
    "warmup_steps=5",
    "scheduler=cosine",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    raw = write_hw3p2(tmp_path_factory.mktemp("raw"), counts=(48, 12, 6), frames=(60, 300), seed=11)
    dst = tmp_path_factory.mktemp("shards")
    build(Settings(str(raw), str(dst), shard_mb=0.2))
    return str(dst)


def _train(data: str, out: str, *overrides: str, resume: bool = False) -> list[str]:
    command = [sys.executable, str(REPO / "train" / "main.py"), "--data", data, "--out", out]
    return command + (["--resume", "must"] if resume else []) + TINY + list(overrides)


def _weights(out: str, epoch: int) -> dict[str, torch.Tensor]:
    return checkpoint.load(f"{out}/{checkpoint.epoch_folder(epoch)}/model.pt")["model"]


def test_one_process_writes_checkpoints_metrics_curves_and_tensorboard(data, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        _train(data, str(out), "epochs=2", "keep_last=1", "log_every_steps=2", "report_to=tensorboard"),
        check=True,
        capture_output=True,
        text=True,
    )
    assert (
        "%|" not in result.stderr
    )  # not a terminal: no tqdm bar in the log (text mode turns its \r into \n)
    (events,) = (out / monitor.TRACKER_FOLDER).glob("events.out.tfevents.*")
    accumulated = EventAccumulator(str(events)).Reload()
    scalars = accumulated.Tags()["scalars"]
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/frames_per_s",
        "train/padding_efficiency",
        "dev/per",
        "dev/distance",
        "dev/blank_share",
        "dev/empty_share",
    ):
        assert tag in scalars, tag
    steps = [event.step for event in accumulated.Scalars("train/loss")]
    dev = accumulated.Scalars("dev/per")
    assert steps == list(range(2, steps[-1] + 1, 2)) and len(dev) == 2  # every 2 steps; each epoch
    assert all(0 < e.value <= 1 for e in accumulated.Scalars("train/padding_efficiency"))
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0] == (
        "epoch,step,train_loss,train_utterances,dev_distance,dev_per,dev_blank_share,dev_empty_share,"
        "dev_distance_averaged,dev_per_averaged,lr,frames_per_s,elapsed_s"
    )
    assert all(row["dev_distance_averaged"] == "" for row in csv.DictReader(lines))  # average=none
    rows = list(csv.DictReader(lines))
    assert len(rows) == 2 and all(int(row["train_utterances"]) == 48 for row in rows)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    card = checkpoint.load(str(out / checkpoint.epoch_folder(1) / "model.pt"))
    assert card["feature_dim"] == 13 and len(card["phonemes"]) == 41 and card["epoch"] == 1
    assert len(card["stats"]["mean"]) == 13 and card["config"]["lstm_hidden"] == 16
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    # Invariant: the last keep_last epochs and the best survive, besides the pointer
    best = min(range(2), key=lambda e: float(rows[e]["dev_distance"]))
    assert kept == sorted({f"epoch-{e:04d}" for e in (1, best)} | {"latest.json"})


def test_a_training_process_leaves_without_the_interpreter_s_finalisation(data, tmp_path):
    """gloo's threads outlive the process group and can abort a rank in finalisation (SIGABRT instead
    of its status), so every way out skips it (``os._exit``) once everything is written: an exit
    handler never runs, while the log's last line and the run's files are all there."""
    out, marker = tmp_path / "run", tmp_path / "finalised"
    script = _train(data, str(out), "epochs=1")
    wrapper = (
        "import atexit, pathlib, runpy, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n"
        f"sys.argv = {script[1:]!r}\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists()
    last = result.stderr.splitlines()[-1]  # the checkpoint writer's line, after the epoch's
    assert "epoch 0: {" in result.stderr and f"{checkpoint.epoch_folder(0)} written in" in last
    assert checkpoint.load(str(out / checkpoint.epoch_folder(0) / "model.pt"))["epoch"] == 0


def test_interrupted_after_epoch_one_resumes_to_the_same_weights(data, tmp_path):
    whole, interrupted = str(tmp_path / "whole"), tmp_path / "interrupted"
    subprocess.run(_train(data, whole, "epochs=2"), check=True, capture_output=True)
    # killed somewhere in epoch 1, once epoch 0 is checkpointed
    kill_when(_train(data, str(interrupted), "epochs=2"), lambda: (interrupted / checkpoint.LATEST).exists())
    subprocess.run(_train(data, str(interrupted), "epochs=2", resume=True), check=True, capture_output=True)
    expected, resumed = _weights(whole, 1), _weights(str(interrupted), 1)
    # Invariant: bit-identical weights, as if never interrupted
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_a_truncated_checkpoint_is_a_clear_error(data, tmp_path):
    out = tmp_path / "run"
    subprocess.run(_train(data, str(out), "epochs=1"), check=True, capture_output=True)
    state = out / checkpoint.epoch_folder(0) / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    result = subprocess.run(_train(data, str(out), "epochs=2", resume=True), capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{state}: not a readable checkpoint" in result.stderr


def test_a_checkpoint_of_an_older_version_resumes(data, tmp_path):
    """Its running totals predate train_utterances (the demo run of an earlier session did)."""
    out = tmp_path / "run"
    subprocess.run(_train(data, str(out), "epochs=2", "keep_last=2"), check=True, capture_output=True)
    (out / checkpoint.LATEST).write_text(
        json.dumps({"folder": checkpoint.epoch_folder(0), "epoch": 0, "step": 0})
    )
    path = out / checkpoint.epoch_folder(0) / "state.pt"
    state = checkpoint.load(str(path))
    state["progress"] = [{k: v for k, v in p.items() if k != "utterances"} for p in state["progress"]]
    # and as written before precision, the GradScaler and per-device CUDA states existed
    state["config"]["bf16"] = state["config"].pop("precision") == "auto"
    del state["config"]["device"], state["scaler"]
    for rng in state["rng"]:
        rng["cuda"] = []
    torch.save(state, path)
    resumed = subprocess.run(_train(data, str(out), "epochs=2", resume=True), capture_output=True, text=True)
    assert resumed.returncode == 0, why_failed(resumed.stderr)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(row["train_utterances"]) for row in rows] == [48, 48]


def test_the_start_up_line_names_device_backend_world_size_and_precision(data, tmp_path):
    result = subprocess.run(
        _train(data, str(tmp_path / "run"), "precision=fp32", "epochs=1"), capture_output=True, text=True
    )
    assert result.returncode == 0, why_failed(result.stderr)
    assert (
        "device CPU with" in result.stderr
        and "world size 1, precision fp32 (BiLSTM in float32)" in result.stderr
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["device=cuda"], "device=cuda: no CUDA GPU is visible"),  # never a silent CPU run
        (["precision=fp16"], "precision=fp16 needs a CUDA GPU"),
        (["--timeout", "200"], "--timeout 200 s must be at least io_deadline_s (300 s) + 60 s"),
    ],
)
def test_what_this_machine_cannot_do_is_refused_in_one_line(data, tmp_path, arguments, message):
    result = subprocess.run(_train(data, str(tmp_path / "run"), *arguments), capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        next(line for line in result.stderr.splitlines() if message in line)
    ]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_launcher_precision_beside_the_run_s_own_is_refused_on_every_rank(data, tmp_path):
    """`accelerate launch --mixed_precision` would add Accelerate's autocast inside the run's own
    (precision=fp32 here, which it would silently override): one authority, so every rank refuses."""
    script = _train(data, str(tmp_path / "run"), "precision=fp32", "epochs=1")[1:]
    command = accelerate_command(script, 2, "--mixed_precision", "bf16")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 2, why_failed(result.stderr)
    assert all(
        "error: accelerate launch was given mixed_precision bf16 (--mixed_precision" in line
        and "launch with --mixed_precision no and set precision=" in line
        for line in errors
    ), errors
    # each rank's own exit is the user's-mistake status (the launcher then reports its children's failure)
    assert re.findall(r"exitcode\s+:\s*(\d+)", result.stderr) == ["2", "2"], why_failed(result.stderr)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_without_a_checkpoint_is_a_clear_error(data, tmp_path):
    result = subprocess.run(
        _train(data, str(tmp_path / "empty"), resume=True), capture_output=True, text=True
    )
    assert result.returncode == 2 and "no checkpoint in this run folder" in result.stderr


def test_two_accelerate_ranks_train_from_s3(data, s3_bucket):
    fs = fsspec.filesystem("s3")
    fs.put(data, f"{s3_bucket}/shards", recursive=True)
    out = f"{s3_bucket}/run"
    script = _train(f"{s3_bucket}/shards", out, "epochs=1", "num_workers=1", "io_deadline_s=60")[1:]
    script += ["--timeout", "120"]
    result = accelerate_launch(script)
    assert result.returncode == 0, why_failed(result.stderr)
    # Invariant: two real ranks, whose weights and buffers agree before validation (checked by the loop itself)
    assert "weights and buffers identical on 2 ranks" in result.stderr
    card = checkpoint.load(f"{out}/{checkpoint.epoch_folder(0)}/model.pt")
    assert card["epoch"] == 0
    metrics = list(csv.DictReader(fs.cat_file(f"{out}/metrics.csv").decode().splitlines()))
    assert len(metrics) == 1
    # Invariant: the dev score training reports is the saved model's (every rank validated with the
    # BatchNorm statistics the checkpoint holds), as evaluation of that model.pt finds it
    evaluated = greedy_dev_row(f"{out}/{checkpoint.epoch_folder(0)}/model.pt", f"{s3_bucket}/shards")
    assert evaluated["distance"] == float(metrics[0]["dev_distance"])


def test_parse_vary_keeps_bracketed_lists_whole():
    from train.ablate import parse_vary, runs

    assert parse_vary("strides=[1,2],[2,2]") == ("strides", ["[1,2]", "[2,2]"])
    assert parse_vary("lr=1e-3, 2e-3") == ("lr", ["1e-3", "2e-3"])
    planned = runs(["epochs=1"], [("lr", ["1e-3", "2e-3"]), ("noise_prob", ["0"])])
    assert [(name, overrides) for name, _, _, overrides in planned] == [
        ("base", ["epochs=1"]),
        ("lr=1e-3", ["epochs=1", "lr=1e-3"]),
        ("lr=2e-3", ["epochs=1", "lr=2e-3"]),
        ("noise_prob=0", ["epochs=1", "noise_prob=0"]),
    ]


def test_ablation_runs_one_factor_at_a_time_and_tabulates(data, tmp_path):
    out = tmp_path / "ablation"
    command = [sys.executable, "-m", "train.ablate", "--data", data, "--out", str(out)]
    command += ["--vary", "lstm_dropout=0.0,0.5", *TINY, "epochs=1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, why_failed(result.stderr)
    rows = (out / "ablation.csv").read_text().splitlines()
    assert rows[0].startswith("run,varied,value,best_dev_distance")
    assert [r.split(",")[0] for r in rows[1:]] == ["base", "lstm_dropout=0.0", "lstm_dropout=0.5"]
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        checkpoint.load(str(out / "lstm_dropout=0.5" / checkpoint.epoch_folder(0) / "model.pt"))["config"][
            "lstm_dropout"
        ]
        == 0.5
    )


def _metrics(out) -> list[dict]:
    return list(csv.DictReader((Path(out) / "metrics.csv").read_text().splitlines()))


def test_timed_checkpoints_come_mid_epoch_and_only_when_asked(data, tmp_path):
    """checkpoint_every_minutes: due at every step here (0.06 s), so mid-epoch step checkpoints are written."""
    timed = subprocess.run(
        _train(data, str(tmp_path / "timed"), "epochs=1", "checkpoint_every_minutes=0.001"),
        capture_output=True,
        text=True,
    )
    untimed = subprocess.run(
        _train(data, str(tmp_path / "untimed"), "epochs=1", "checkpoint_every_minutes=0"),
        capture_output=True,
        text=True,
    )
    assert timed.returncode == untimed.returncode == 0, why_failed(timed.stderr + untimed.stderr)
    steps = int(_metrics(tmp_path / "timed")[0]["step"])
    mid_epoch = [line for line in timed.stderr.splitlines() if "/step-" in line and "written in" in line]
    assert 1 <= len(mid_epoch) <= steps, timed.stderr[-3000:]
    assert not any("/step-" in line for line in untimed.stderr.splitlines())


def test_grad_accum_takes_one_optimiser_step_per_n_batches(data, tmp_path):
    for n in (1, 2):
        subprocess.run(
            _train(data, str(tmp_path / f"accum-{n}"), "epochs=1", f"grad_accum={n}"),
            check=True,
            capture_output=True,
        )
    batches = int(_metrics(tmp_path / "accum-1")[0]["step"])
    assert batches >= 4 and int(_metrics(tmp_path / "accum-2")[0]["step"]) == -(-batches // 2)


def test_the_plateau_scheduler_lowers_the_rate_when_dev_stops_improving(data, tmp_path):
    """The rate after each epoch is ReduceLROnPlateau's rule applied to the dev distances (patience 0,
    factor 0.5); at lr 1e-6 dev barely moves, so the rule does drop it."""
    out = tmp_path / "plateau"
    subprocess.run(
        _train(
            data,
            str(out),
            "epochs=4",
            "scheduler=plateau",
            "plateau_patience=0",
            "plateau_factor=0.5",
            "lr=1e-6",
            "warmup_steps=0",
        ),
        check=True,
        capture_output=True,
    )
    rows = _metrics(out)
    best, rate, expected = math.inf, 1e-6, []
    for row in rows:
        distance = float(row["dev_distance"])
        if distance < best * (1 - 1e-4):
            best = distance
        else:
            rate *= 0.5
        expected.append(rate)
    assert expected[-1] < 1e-6  # the premise: dev stopped improving at least once
    assert [float(row["lr"]) for row in rows] == pytest.approx(expected, rel=1e-6)


def _in_process_trainer(data: str, out: Path, *overrides: str) -> main.Trainer:
    """A Trainer in this process, as `train/main.py` builds it; its signal handlers put back at once."""
    args = main.parse_args(["--data", data, "--out", str(out), *TINY, *overrides])
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        return main.Trainer(args, main.load_config(args.config, args.overrides))
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _as_if_on_a_gpu(trainer: main.Trainer) -> None:
    """The trainer's model, augmentation, optimiser and running figures on host_syncs.DEVICE, and
    its forward's tensor arguments moved there first, as DDP moves them on a GPU."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    for module in (model, trainer.augment, *([trainer.average.model] if trainer.average else [])):
        host_syncs.move_module(module)
    trainer.optimizer.optimizer.param_groups[0]["params"] = list(model.parameters())
    trainer.device = host_syncs.DEVICE
    trainer.unread_loss = host_syncs.on_device(trainer.unread_loss)
    trainer.grad_norm = host_syncs.on_device(trainer.grad_norm)

    def move_like_ddp(_module, args):
        moved = lambda t: host_syncs.on_device(t) if type(t) is torch.Tensor else t  # noqa: E731
        return torch.utils._pytree.tree_map(moved, args)

    model.register_forward_pre_hook(move_like_ddp)


@pytest.mark.parametrize(
    "settings",
    [
        ("lstm_impl=packed", "precision=fp32"),
        ("lstm_impl=packed", "precision=bf16"),
        ("lstm_impl=padded", "precision=fp32"),
        ("lstm_impl=padded", "precision=fp32", "average=ema"),
    ],
    ids=["packed-fp32", "packed-bf16", "padded-fp32", "padded-fp32-ema"],
)
def test_a_training_step_never_waits_for_the_device(data, tmp_path, settings):
    """Every host read of a device tensor, copy back to the host and blocking copy to the device that
    the training step makes (tests/host_syncs.py: on a GPU each one is the host waiting for it),
    counted over optimiser steps of 2 accumulated batches, augmentation and dropout on. None is
    left in the Python code of a step (the CUDA CTC loss's own copies of its lengths are native,
    docs/training.md). Red with torch's per-layer packing (8 waits a forward for 4 layers), lengths
    given as a tensor that DDP moves, or a loss read every step."""
    overrides = (
        "lstm_layers=4",
        "grad_accum=2",
        "max_frames=1500",
        "noise_prob=0.5",
        "log_every_steps=1000",
        *settings,
    )
    trainer = _in_process_trainer(data, tmp_path / "run", *overrides)
    _as_if_on_a_gpu(trainer)
    trainer.model.train()
    trainer.augment.train()
    batches = iter(trainer.train_stream)
    with host_syncs.counting():  # the first step's lazy set-up (optimiser states) aside
        trainer.train_step(next(batches))
        trainer.train_step(next(batches))
    with host_syncs.counting() as waits:
        for _ in range(4):
            trainer.train_step(next(batches))
    assert trainer.step == 3 and not waits, dict(waits)
    assert trainer.average is None or trainer.average.updates == 3
    # Invariant: the counting sees a wait where there is one (the record every log_every_steps)
    with host_syncs.counting() as waits:
        trainer._settle()
    assert waits == {"_local_scalar_dense": 1}


def test_a_step_the_loss_scaler_skips_does_not_move_the_schedule(data, tmp_path):
    """fp16's GradScaler skips the optimiser step when a gradient overflowed; the cosine schedule
    must then stay where it is (it counts updates, not attempts). On the CPU: a GradScaler whose
    first scales overflow float32 (2^127 × the loss), halved at each skip."""
    trainer = _in_process_trainer(data, tmp_path / "run", "max_frames=1500", "precision=fp32")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=10**6)
    updates = []
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: updates.append(trainer.step))
    trainer.model.train()
    for batch in trainer.train_stream:
        trainer.train_step(batch)
    skipped = trainer.step - len(updates)
    # Invariant: the schedule advanced once per update, never for a skipped step
    assert skipped > 0 and updates, (trainer.step, updates)
    assert trainer.scheduler.last_epoch == len(updates)


def test_batches_are_pinned_only_for_a_gpu(data, tmp_path, monkeypatch):
    """Page-locked memory is only for copies to a GPU; asking for it creates a CUDA context on GPU 0,
    so a run with device=cpu on a machine that has GPUs must not (torch.cuda says there is one here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    asked = []
    original = torch.utils.data.DataLoader.__init__

    def recording(self, *args, **kwargs):
        asked.append(kwargs.get("pin_memory"))
        original(self, *args, **{**kwargs, "pin_memory": False})  # none can be made here

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", recording)
    trainer = _in_process_trainer(data, tmp_path / "run", "device=cpu")
    for stream in (trainer.train_stream, trainer.dev_stream):
        next(iter(stream))
    assert asked == [False, False]


def test_a_model_forced_to_blanks_is_named_after_three_epochs_with_its_causes(data, tmp_path, caplog):
    """The classifier's blank bias raised so far that every frame is blank, and a learning rate too
    small to move it: metrics.csv records every frame blank and every transcript empty, and from
    the third epoch on one warning line says so with the usual causes."""
    trainer = _in_process_trainer(
        data, tmp_path / "run", "epochs=3", "lr=1e-12", "checkpoint_every_minutes=0"
    )
    classifier = trainer.accelerator.unwrap_model(trainer.model).classifier[-1]
    with torch.no_grad():
        classifier.bias[0] = 1e4
    with caplog.at_level("WARNING", logger="train"):
        trainer.run()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [(r["dev_blank_share"], r["dev_empty_share"]) for r in rows] == [("1.0", "1.0")] * 3
    alarms = [r.getMessage() for r in caplog.records if "only blanks" in r.getMessage()]
    assert len(alarms) == 1 and alarms[0].startswith(
        "epoch 2: after 3 epochs the model still emits only blanks"
    )
    assert "learning rate" in alarms[0] and "time stride (2)" in alarms[0]


def test_training_reads_the_training_folders_it_is_told_to(tmp_path):
    raw = write_hw3p2(
        tmp_path / "raw", (24, 6, 4), frames=(60, 200), seed=11, more_train=(("train-clean-360", 10),)
    )
    build(Settings(str(raw), str(tmp_path / "shards"), shard_mb=0.2))
    command = _train(str(tmp_path / "shards"), str(tmp_path / "run"), "epochs=1")
    result = subprocess.run([*command, "train_sources=train-clean-360"], capture_output=True, text=True)
    assert result.returncode == 0, why_failed(result.stderr)
    assert "train: 10 utterances from train-clean-360" in result.stderr
    history = checkpoint.load(str(tmp_path / "run" / checkpoint.epoch_folder(0) / "state.pt"))["history"]
    assert history[0]["train_utterances"] == 10  # the other folder's 24 are not trained on
    unknown = subprocess.run(
        _train(str(tmp_path / "shards"), str(tmp_path / "other"), "train_sources=train-clean-500"),
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 2 and "no utterance from ['train-clean-500']" in unknown.stderr

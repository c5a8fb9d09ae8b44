"""Runs survive being stopped: mid-epoch checkpoints, automatic resume, coordinated SIGTERM, killed ranks.

Every check compares against an uninterrupted run of the same settings: the continued run must
end with bit-identical weights (every random state, reader position and running total restored).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import fsspec
import psutil
import pytest
import torch
from accelerate import Accelerator

from loopback.ports import free_port
from loopback.processes import launched
from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.manifest import read_split_metadata
from tests.outage import CuttableProxy
from tests.processes import accelerate_command, kill_when, why_failed
from train import checkpoint, preemption, resume
from train.preemption import SIGNALS, PreemptionWatch

REPO = Path(__file__).resolve().parents[1]
TINY = ["channels=16", "lstm_layers=1", "lstm_hidden=16", "classifier_hidden=32", "max_frames=2000"]
TINY += ["num_workers=0", "warmup_steps=5", "scheduler=cosine", "epochs=2", "checkpoint_every_minutes=0"]


@pytest.fixture(scope="module")
def data(tiny_shards) -> str:
    return tiny_shards


def _script(data: str, out: Path, *overrides: str) -> list[str]:
    return [str(REPO / "train" / "main.py"), "--data", data, "--out", str(out), *TINY, *overrides]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(str(out / checkpoint.epoch_folder(1) / "model.pt"))["model"]


def _assert_same_weights(expected: Path, resumed: Path) -> None:
    a, b = _final_weights(expected), _final_weights(resumed)
    # Invariant: bit-identical weights, as if never interrupted
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _latest(out: Path) -> dict:
    path = out / checkpoint.LATEST
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="module")
def whole_one_rank(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole1") / "run"
    subprocess.run([sys.executable, *_script(data, out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def whole_two_ranks(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole2") / "run"
    result = subprocess.run(
        accelerate_command(_script(data, out)), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, why_failed(result.stderr)
    return out


@contextlib.contextmanager
def _watching() -> Iterator[PreemptionWatch]:
    """A PreemptionWatch in this process, with the signal handlers it replaced put back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield PreemptionWatch()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signal.Signals(signum).name)
def test_the_watch_reports_a_signal_and_a_due_checkpoint_one_step_later(signum):
    accelerator = Accelerator(cpu=True)
    with _watching() as watch:
        assert watch.agree(accelerator, False) == (False, False)
        assert watch.agree(accelerator, True) == (False, False)  # this step's flags: the next call reads them
        os.kill(os.getpid(), signum)
        assert watch.agree(accelerator, False) == (False, True)  # the step before's: a timed checkpoint
        assert watch.agree(accelerator, False) == (True, False)
        assert watch.agree(accelerator, False) == (True, False)  # noted until the process exits


def _watch_in_a_process(*lines: str) -> subprocess.CompletedProcess:
    """A process that runs ``lines`` (``os``, ``signal``, ``time`` and ``preemption`` imported), then
    waits 60 s and prints 'still running': a watch that exits at once never gets there."""
    code = "\n".join(
        [
            "import os, signal, time",
            "from train import preemption",
            *lines,
            "time.sleep(60)",
            "print('still running')",
        ]
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_second_signal_to_the_watch_exits_at_once_with_128_plus_its_number():
    result = _watch_in_a_process(
        "watch = preemption.PreemptionWatch()",
        "os.kill(os.getpid(), signal.SIGUSR1)",
        "print('noted', watch.signalled_at is not None, flush=True)",
        "os.kill(os.getpid(), signal.SIGTERM)",
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stdout == "noted True\n" and "SIGUSR1 received" in result.stderr


def test_the_same_signal_again_at_once_is_an_echo_and_later_exits():
    """scancel signals the launcher too, and torchrun's agent passes the SIGTERM on to its ranks: a rank
    hears one stop twice. The repeat within ECHO_S is ignored (the rank still checkpoints); the same
    signal after ECHO_S is a second request and exits at once."""
    result = _watch_in_a_process(
        "preemption.ECHO_S = 1.0",
        "watch = preemption.PreemptionWatch()",
        "os.kill(os.getpid(), signal.SIGTERM)",
        "os.kill(os.getpid(), signal.SIGTERM)",
        "print('echo ignored', flush=True)",
        "time.sleep(1.5)",
        "os.kill(os.getpid(), signal.SIGTERM)",
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stdout == "echo ignored\n" and result.stderr.count("SIGTERM received") == 1


@pytest.mark.parametrize(
    "first, then, after_s, exits",
    [
        (signal.SIGTERM, signal.SIGTERM, 4.999, False),  # the launcher's echo
        (signal.SIGTERM, signal.SIGTERM, 5.0, True),  # the window is 5 s, its end not in it
        (signal.SIGTERM, signal.SIGUSR1, 0.0, True),  # another signal is another request, whichever
        (signal.SIGUSR1, signal.SIGTERM, 0.0, True),
    ],
)
def test_only_the_same_signal_within_five_seconds_is_an_echo(monkeypatch, first, then, after_s, exits):
    """On the watch's own clock: the window's length and edge, and the signals it spans."""
    clock = [1000.0]

    def leave(status: int) -> NoReturn:
        raise SystemExit(status)

    monkeypatch.setattr(preemption.signal, "signal", lambda *_: None)  # the test process keeps its handlers
    monkeypatch.setattr(preemption.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(preemption.os, "_exit", leave)
    watch = PreemptionWatch()
    watch._handle(first, None)
    clock[0] += after_s
    if exits:
        with pytest.raises(SystemExit) as left:
            watch._handle(then, None)
        assert left.value.code == 128 + then
    else:
        watch._handle(then, None)  # returns: ignored
    assert watch.signalled_at == 1000.0  # an echo is no new signal


def test_killed_mid_epoch_a_rerun_continues_from_the_step_checkpoint(data, whole_one_rank, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, *_script(data, out, "checkpoint_every_steps=3")]
    # kill -9 once a mid-epoch checkpoint of epoch 1 exists (epoch 0 is done)
    kill_when(command, lambda: _latest(out).get("epoch") == 0 and "step-" in _latest(out).get("folder", ""))
    state = checkpoint.load(str(out / _latest(out)["folder"] / "state.pt"))
    assert state["train_stream"]["consumed"] > 0  # mid-epoch indeed
    subprocess.run(command, check=True, capture_output=True)  # the same command: --resume auto
    _assert_same_weights(whole_one_rank, out)
    # Invariant: mid-epoch folders go once a newer checkpoint exists
    assert not list((out / "checkpoints").glob("step-*"))


def _wait_for_epoch_0(launcher: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 300
    while _latest(out).get("epoch") != 0:
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def _ranks_of(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The training ranks an ``accelerate launch`` started (its children), by rank (RANK in their environment)."""
    ranks = [p for p in psutil.Process(launcher.pid).children() if "RANK" in p.environ()]
    return sorted(ranks, key=lambda p: int(p.environ()["RANK"]))


def _stops(output: str) -> list[tuple[int, int, int, int]]:
    """(rank, world size, step, exit status) of each rank's "preempted" line."""
    found = re.findall(
        r"preempted: rank (\d+) of (\d+): checkpoint at step (\d+) .*, [\d.]+ s after the signal; exiting with (\d+)",
        output,
    )
    return sorted(tuple(int(x) for x in stop) for stop in found)


def _stop_mid_epoch_one(command: list[str], out: Path, rank: int | None, signum: int) -> str:
    """Run ``command`` (2 ranks) until epoch 0 is checkpointed, then send ``signum`` to ``rank``
    only (the other must hear of it), or to every process of the job (``None``: the launcher, the
    ranks, their loader workers, as Slurm's scancel does): a checkpoint mid-epoch 1. The launcher's output."""
    with launched(command) as launcher:
        _wait_for_epoch_0(launcher, out)
        ranks = _ranks_of(launcher)
        assert len(ranks) == 2
        job = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
        for process in job if rank is None else [ranks[rank]]:
            process.send_signal(signum)
        output, _ = launcher.communicate(timeout=300)
    stops = _stops(output)
    # Invariant: every rank stopped, at the same step, with the status the README documents (75,
    # EX_TEMPFAIL: the literal, so that changing the constant is noticed); one checkpoint names it
    assert [(r, world, code) for r, world, _, code in stops] == [(0, 2, 75), (1, 2, 75)], why_failed(output)
    assert len({step for _, _, step, _ in stops}) == 1, why_failed(output)
    assert f"{signal.Signals(signum).name} received" in output
    assert _latest(out)["folder"] == checkpoint.step_folder(stops[0][2])
    return output


def test_sigterm_to_one_rank_stops_both_at_one_step_and_the_rerun_finishes_the_same(
    data, whole_two_ranks, tmp_path
):
    out = tmp_path / "run"
    _stop_mid_epoch_one(accelerate_command(_script(data, out)), out, rank=1, signum=signal.SIGTERM)
    result = subprocess.run(
        accelerate_command(_script(data, out)), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, why_failed(result.stderr)
    _assert_same_weights(whole_two_ranks, out)


def test_sigterm_to_every_process_of_the_job_still_checkpoints_every_rank(data, tmp_path):
    """Slurm's scancel (and its time-limit warning) signals every process of a job, loader workers
    included: the workers leave the signal to their rank, which checkpoints (a worker ended by it used
    to end its rank first, with no checkpoint)."""
    out = tmp_path / "run"
    command = accelerate_command(_script(data, out, "num_workers=1"))
    output = _stop_mid_epoch_one(command, out, rank=None, signum=signal.SIGTERM)
    assert "killed by signal" not in output
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, why_failed(result.stderr)
    history = checkpoint.load(str(out / checkpoint.epoch_folder(1) / "state.pt"))["history"]
    utterances = len(read_split_metadata(data, "train")[1])
    assert [row["train_utterances"] for row in history] == [utterances, utterances]


def test_a_checkpoint_of_two_ranks_resumes_on_one_with_a_loader_worker(data, tmp_path):
    """Elastic resume: stopped (Slurm's SIGUSR1 to rank 0) mid-epoch on 2 ranks without loader workers,
    continued by one process with one."""
    out = tmp_path / "run"
    _stop_mid_epoch_one(accelerate_command(_script(data, out)), out, rank=0, signum=signal.SIGUSR1)
    stopped = checkpoint.load(str(out / _latest(out)["folder"] / "state.pt"))
    result = subprocess.run(
        [sys.executable, *_script(data, out, "num_workers=1")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, why_failed(result.stderr)
    assert "saved by 2 ranks, resuming on 1" in result.stderr
    history = checkpoint.load(str(out / checkpoint.epoch_folder(1) / "state.pt"))["history"]
    utterances = len(read_split_metadata(data, "train")[1])
    # Invariant: each epoch trained on every utterance exactly once, the interrupted one included
    assert [row["train_utterances"] for row in history] == [utterances, utterances]
    assert stopped["train_stream"]["consumed"] > 0 and history[1]["step"] > stopped["step"]


def test_a_killed_rank_is_restarted_by_torchrun_and_resumes_alone(data, whole_two_ranks, tmp_path):
    """`accelerate launch --max_restarts N`: kill -9 one rank; the group restarts and continues by itself."""
    out = tmp_path / "run"
    # --timeout bounds a hung collective (the default is 30 minutes)
    script = [*_script(data, out, "checkpoint_every_steps=2", "io_deadline_s=60"), "--timeout", "300"]
    command = accelerate_command(script, 2, "--max_restarts", "3")
    with launched(command) as launcher:
        _wait_for_epoch_0(launcher, out)
        _ranks_of(launcher)[0].kill()
        output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, why_failed(output)
    # Invariant: the first restarted group connects (no stale rendezvous keys, train/rendezvous.py)
    assert "connectFullMesh failed" not in output, why_failed(output)
    # each rank, once (a second restart shows what failed the first restarted group)
    assert output.count("resumed from") == 2, why_failed(output, tail=6000)
    _assert_same_weights(whole_two_ranks, out)


def test_resume_rules(data, whole_one_rank, tmp_path):
    finished_run = tmp_path / "finished"
    shutil.copytree(whole_one_rank, finished_run)  # other tests compare against the fixture: never touched
    run = [sys.executable, *_script(data, finished_run)]
    never = subprocess.run([*run, "--resume", "never"], capture_output=True, text=True)
    assert never.returncode == 2 and "holds a checkpoint and --resume never refuses it" in never.stderr
    must = subprocess.run(
        [sys.executable, *_script(data, tmp_path / "empty"), "--resume", "must"],
        capture_output=True,
        text=True,
    )
    assert must.returncode == 2 and "no checkpoint in this run folder" in must.stderr
    other = subprocess.run([*run, "lstm_hidden=24", "lr=1e-3"], capture_output=True, text=True)
    # Invariant: a different config is an error naming each difference
    assert other.returncode == 2
    assert "saved with other settings: lr: 0.002 → 0.001; lstm_hidden: 16 → 24" in other.stderr
    elsewhere = tmp_path / "other-shards"  # the same layout and settings, other utterances
    build(
        Settings(
            str(write_hw3p2(tmp_path / "other-raw", counts=(48, 8, 4), frames=(60, 300), seed=13)),
            str(elsewhere),
            shard_mb=0.2,
        )
    )
    other_data = subprocess.run(
        [sys.executable, *_script(str(elsewhere), finished_run)], capture_output=True, text=True
    )
    # Invariant: a checkpoint continues only on the data it was trained on
    assert other_data.returncode == 2 and "Traceback" not in other_data.stderr, why_failed(other_data.stderr)
    assert (
        "saved for another dataset (index fingerprints" in other_data.stderr
        and str(elsewhere) in other_data.stderr
    )
    finished = subprocess.run(run, capture_output=True, text=True)  # resumes a finished run: nothing to do
    assert finished.returncode == 0 and "resumed from" in finished.stderr


def test_a_second_signal_to_a_training_rank_exits_at_once(data, tmp_path):
    """A real training process gets SIGUSR1 (checkpoint at the next step) and then SIGTERM before that
    step: it exits at once with 128 + SIGTERM and writes no preemption checkpoint. Both signals are sent
    while it is stopped (SIGSTOP), so they arrive together whatever the machine's load."""
    out = tmp_path / "run"
    with launched([sys.executable, *_script(data, out, "epochs=50")]) as process:
        _wait_for_epoch_0(process, out)
        process.send_signal(signal.SIGSTOP)
        process.send_signal(signal.SIGUSR1)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, why_failed(output)
    assert "SIGUSR1 received: checkpointing at the next step" in output and "preempted:" not in output
    assert not list((out / "checkpoints").glob("step-*"))  # no preemption checkpoint


def _two_machines(
    script_of_rank, *options: str, host_options=((), ()), interrupt=None
) -> tuple[list[subprocess.Popen], list[str]]:
    """Two launchers of one rank each, as two machines on loopback would run: (launchers, outputs).
    Machine 0 is started first and listens before machine 1 starts (the c10d rendezvous's host);
    ``host_options`` are each machine's own launch options, ``interrupt(launchers)`` runs while both
    train."""
    port = free_port()
    machine = ["--num_machines", "2", "--main_process_ip", "127.0.0.1", *options]
    with contextlib.ExitStack() as stack:
        launchers = []
        for rank in (0, 1):
            launch = [*machine, "--machine_rank", str(rank), *host_options[rank]]
            command = accelerate_command(script_of_rank(rank), 2, *launch, port=port)
            launchers.append(stack.enter_context(launched(command)))
            if rank == 0:
                _wait_for_listener(launchers[0], port)
        if interrupt is not None:
            interrupt(launchers)
        return launchers, [launcher.communicate(timeout=600)[0] for launcher in launchers]


def _wait_for_listener(launcher: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 120
    while not any(
        c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp")
    ):
        assert launcher.poll() is None and time.monotonic() < deadline, "machine 0 never listened"
        time.sleep(0.05)


def _sigterm_pending(process: psutil.Process) -> bool:
    """Whether a SIGTERM waits to be delivered to ``process`` (a stopped process keeps it pending)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    pending = [
        int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd"))
    ]
    return any(mask & 1 << (signal.SIGTERM - 1) for mask in pending)


@pytest.mark.parametrize("backend", ["static", "c10d"])
def test_two_machines_recover_from_a_killed_worker_on_one(data, whole_two_ranks, tmp_path, backend):
    """kill -9 of machine 1's worker while machine 0's is frozen (SIGSTOP: it notices nothing, as an
    NCCL rank would not until its collective timeout). torchrun's agents restart the workers; under
    c10d machine 0's agent restarts its frozen worker for the membership change without counting a
    restart, so the two machines' restart counts differ, and the restarted workers must still agree
    on new rendezvous keys (train/rendezvous.py): both launchers exit 0 with the weights of an
    uninterrupted run."""
    out = tmp_path / "run"
    script = [*_script(data, out, "checkpoint_every_steps=2", "io_deadline_s=60"), "--timeout", "300"]
    options = ["--max_restarts", "3", "--rdzv_backend", backend]
    hosts = ((), ())
    if backend == "c10d":  # on one host both agents would claim the store: machine 0 hosts it
        hosts = (("--rdzv_conf", "is_host=true"), ("--rdzv_conf", "is_host=false"))

    def freeze_0_kill_1(launchers):
        _wait_for_epoch_0(launchers[1], out)
        (frozen,), (killed,) = _ranks_of(launchers[0]), _ranks_of(launchers[1])
        assert [frozen.environ()["RANK"], killed.environ()["RANK"]] == ["0", "1"]
        frozen.suspend()
        killed.kill()
        deadline = time.monotonic() + 120

        def released() -> bool:  # c10d: machine 0's agent stops its worker; static: machine 1's restarted
            if backend == "c10d":
                return _sigterm_pending(frozen)
            try:
                return any(worker.pid != killed.pid for worker in _ranks_of(launchers[1]))
            except psutil.NoSuchProcess:  # a worker that ended while it was being looked at
                return False

        while not released():
            assert time.monotonic() < deadline, "the agents never restarted the workers"
            time.sleep(0.05)
        frozen.resume()

    launchers, outputs = _two_machines(
        lambda rank: script, *options, host_options=hosts, interrupt=freeze_0_kill_1
    )
    assert [launcher.returncode for launcher in launchers] == [0, 0], why_failed(outputs[0]) + why_failed(
        outputs[1]
    )
    # Invariant: each machine's worker resumed after the kill, and the run ended where an uninterrupted one does
    assert [output.count("resumed from") for output in outputs] == [1, 1], why_failed(outputs[1])
    _assert_same_weights(whole_two_ranks, out)


def test_two_machines_of_one_rank_train_like_two_ranks_on_one_machine(data, whole_two_ranks, tmp_path):
    """The multi-machine command (README, docs/training.md), both "machines" on loopback: the same weights as one machine."""
    out = tmp_path / "run"
    launchers, outputs = _two_machines(lambda rank: _script(data, out))
    assert [launcher.returncode for launcher in launchers] == [0, 0], why_failed(outputs[0]) + why_failed(
        outputs[1]
    )
    assert "weights and buffers identical on 2 ranks" in outputs[0]
    _assert_same_weights(whole_two_ranks, out)


def test_an_object_store_outage_is_waited_out_and_past_the_deadline_named(
    data, whole_one_rank, s3_bucket, s3_server
):
    """Training on S3 through a link cut twice: until the first retry is logged (waited out), then for
    good (an error; a rerun resumes)."""
    fsspec.filesystem("s3").put(data, f"{s3_bucket}/shards", recursive=True)
    proxy = CuttableProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    # botocore's own retries off: each attempt fails at once, so the project's retries are what is tested
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    out = f"{s3_bucket}/run"
    command = [
        sys.executable,
        *_script(f"{s3_bucket}/shards", out, "checkpoint_every_steps=2", "io_deadline_s=60"),
    ]
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    deadline = time.monotonic() + 300
    with launched(command, env=env) as process:
        while not fs.exists(f"{out}/{checkpoint.LATEST}"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proxy.down()
        seen = []
        for line in process.stdout:  # the outage ends when the project's first retry is logged
            seen.append(line)
            if "retrying in" in line:
                break
        proxy.up()
        output = "".join(seen) + process.communicate(timeout=600)[0]
    assert process.returncode == 0, why_failed(output)
    # Invariant: the outage was met (each retry logged with the URL) and changed nothing
    retries = [line for line in output.splitlines() if "shards.retry" in line and "retrying in" in line]
    assert retries and all(f"{s3_bucket}/" in line for line in retries), why_failed(output)
    a = _final_weights(whole_one_rank)
    b = checkpoint.load(f"{out}/{checkpoint.epoch_folder(1)}/model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # past the deadline: one line naming the URL, exit 2, the newest complete checkpoint intact
    broken = f"{s3_bucket}/run-broken"
    command = [
        sys.executable,
        *_script(f"{s3_bucket}/shards", broken, "checkpoint_every_steps=2", "io_deadline_s=3"),
    ]
    deadline = time.monotonic() + 300  # this phase's own
    with launched(command, env=env) as process:
        while not fs.exists(f"{broken}/{checkpoint.LATEST}"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proxy.down()
        output, _ = process.communicate(timeout=300)
        proxy.up()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert process.returncode == 2 and len(errors) == 1 and "Traceback" not in output, why_failed(output)
    # the URL that kept failing: the run folder's checkpoint or a shard being read, whichever met it first
    assert re.search(
        rf"{s3_bucket}/(run-broken|shards)/\S+: still failing after \d+ s of retries", errors[0]
    ), errors
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0 and "resumed from" in rerun.stderr, why_failed(rerun.stderr)
    b = checkpoint.load(f"{broken}/{checkpoint.epoch_folder(1)}/model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_outage_at_an_epoch_s_end_past_the_deadline_ends_every_rank_with_its_reason(
    data, s3_bucket, s3_server
):
    """The link to the store goes down at the epoch's checkpoint and stays down: rank 0's checkpoint
    and then its metrics write each retry for io_deadline_s, while the other rank waits under the
    smallest collective timeout the rule accepts. Every rank ends with exit 2 and the same one line
    naming the URL (not an abort, or a collective error that names no store)."""
    proxy = CuttableProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_MAX_ATTEMPTS": "1"}
    out = f"{s3_bucket}/run"
    deadline_s = 3
    smallest = deadline_s + resume.TIMEOUT_MARGIN_S
    too_short = subprocess.run(
        [sys.executable, *_script(data, out, f"io_deadline_s={deadline_s}"), "--timeout", str(smallest - 1)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert too_short.returncode == 2 and f"--timeout {smallest - 1} s must be at least" in too_short.stderr
    proxy.down_on(f"PUT /{s3_bucket.removeprefix('s3://')}/run/{checkpoint.epoch_folder(0)}/".encode())
    script = [*_script(data, out, f"io_deadline_s={deadline_s}"), "--timeout", str(smallest)]
    result = subprocess.run(accelerate_command(script), capture_output=True, text=True, env=env, timeout=600)
    errors = sorted(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert re.findall(r"exitcode\s+:\s*(\d+)", result.stderr) == ["2", "2"], why_failed(result.stderr)
    assert len(errors) == 2 and errors[0] == errors[1], why_failed(result.stderr)
    assert re.search(rf"{s3_bucket}/run\S*: still failing after \d+ s of retries", errors[0]), errors
    assert "Traceback" not in result.stderr.split("exitcode")[0], why_failed(result.stderr)


def test_two_machines_with_node_local_run_folders_are_refused_up_front(data, tmp_path):
    """Each "machine" names its own local OUT (as node-local disks would be): refused before training,
    by every rank, instead of only machine 0 resuming later."""
    launchers, outputs = _two_machines(lambda rank: _script(data, tmp_path / f"node{rank}" / "run"))
    assert all(launcher.returncode != 0 for launcher in launchers)
    for output in outputs:
        assert "a local folder that rank 1 on" in output and "cannot see (node-local storage)" in output, (
            why_failed(output)
        )
    assert not list(tmp_path.glob("node*/run/checkpoints"))
    assert not list(tmp_path.glob("node*/run/.shared-run-folder-probe*"))  # the probe is removed

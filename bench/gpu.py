"""The prepared GPU check: one command that says how training really runs on this machine's GPU.

    .venv/bin/python -m bench.gpu [--json bench-gpu.json] [--steps 200] [--seconds-per-case 25]
    .venv/bin/python -m bench.gpu --tiny     # the same code on the CPU with a tiny model, < 1 minute

Synthesises a training set in HW3P2's shape on the spot (random MFCCs, 13 coefficients, 400–2,000
frames, nothing downloaded), shards it with the pipeline, and trains medium.yaml's model through the
real training step (train.main.Trainer: augmentation, autocast, GradScaler, clipping) for each
precision the device offers natively (bf16 from compute capability 8.0, and on older GPUs a row that
says why it is skipped; fp16; fp32) and each LSTM path the device runs (packed on GPUs, where padded
is refused; packed and padded on CPUs), then the first of those again with an EMA of the weights
(``average=ema``: its update must add no host synchronisation). Per case: real frames/s, the dtype the LSTMs actually
computed in (read with a forward hook), host synchronisations per optimiser step
(torch.cuda.set_sync_debug_mode), peak GPU memory, and whether the loss stayed finite over --steps
batches, each run as training runs it (Trainer.train_step: the schedule, the records, the ranks'
agreement). A case that fails (out of memory, a crash) keeps a row with the reason, and the JSON is
written after every case, so a run cut short keeps what it measured. Then the loader alone with the
config's workers against what the model consumes, and, with two or more GPUs, one epoch of
train/main.py on 2 NCCL ranks. Prints one table and writes it as JSON.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from pipeline.build import Settings, build
from pipeline.synthetic import write_hw3p2
from shards.reader import BatchStream
from train.config import load_config
from train.hardware import native_bf16
from train.main import Trainer, parse_args
from train.model import BiLSTMLayer

REPO = Path(__file__).resolve().parents[1]
MEDIUM = REPO / "train" / "configs" / "medium.yaml"
TINY = [
    "channels=16",
    "lstm_layers=2",
    "lstm_hidden=16",
    "classifier_hidden=32",
    "max_frames=4000",
    "num_workers=2",
]


def synthesise(root: Path, utterances: int, frames: tuple[int, int]) -> str:
    """A random HW3P2-layout corpus under ``root``, sharded; returns the dataset's folder."""
    raw = write_hw3p2(root / "raw", counts=(utterances, max(utterances // 20, 8), 4), frames=frames, seed=0)
    build(Settings(str(raw), str(root / "shards"), shard_mb=16))
    return str(root / "shards")


def _trainer(data: str, out: Path, overrides: list[str]) -> Trainer:
    args = parse_args(["--data", data, "--out", str(out), "--config", str(MEDIUM), *overrides])
    config = load_config(args.config, args.overrides)
    return Trainer(args, config)


def _lstm_dtypes(trainer: Trainer) -> set[str]:
    """Records the dtype every BiLSTM layer of the model computes in, as it runs."""
    seen: set[str] = set()
    model = trainer.accelerator.unwrap_model(trainer.model)
    for module in model.modules():
        if isinstance(module, BiLSTMLayer):
            # out: a padded batch or packed sequences, whose .data holds the rows
            module.register_forward_hook(
                lambda _m, _i, out: seen.add(str(out.data.dtype).removeprefix("torch."))
            )
    return seen


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_case(data: str, out: Path, case: dict, steps: int, seconds: float, tiny: bool) -> dict:
    """Train ``steps`` steps (or ``seconds``, whichever ends first) of one case: precision × LSTM
    path × weight average (whose update must add no host synchronisation)."""
    precision, impl, average = case["precision"], case["lstm_impl"], case["average"]
    overrides = [f"precision={precision}", f"lstm_impl={impl}", f"average={average}", "report_to=none"]
    overrides += [
        "checkpoint_every_minutes=0",
        "scheduler=cosine",
        "warmup_steps=20",
        *(TINY if tiny else []),
    ]
    trainer = _trainer(data, out / f"{precision}-{impl}-{average}", overrides)
    device = trainer.device
    dtypes = _lstm_dtypes(trainer)
    trainer.model.train()
    trainer.augment.train()
    batches = iter(trainer.train_stream)
    for _ in range(3):  # warm-up: cuDNN plans, allocator, loader start
        trainer.train_step(next(batches))
    trainer._settle()
    trainer.totals.loss_sum = 0.0
    _synchronise(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.set_sync_debug_mode("warn")
    frames = done = 0
    first_step = trainer.step
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:
            frames += trainer.train_step(batch)
            done += 1
            if done >= steps or time.perf_counter() - started > seconds:
                break
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
    _synchronise(device)
    elapsed = time.perf_counter() - started
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    optimiser_steps = trainer.step - first_step
    trainer._settle()
    loss = trainer.totals.loss_sum / max(done, 1)
    return {
        "precision": trainer.precision,
        "lstm_impl": impl,
        "average": average,
        "steps": optimiser_steps,
        "real_frames_per_s": round(frames / elapsed, 1),
        "lstm_dtype": ",".join(sorted(dtypes)),
        "host_syncs_per_step": round(syncs / max(optimiser_steps, 1), 2) if device.type == "cuda" else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        "mean_loss": round(loss, 4),
        "loss_finite": math.isfinite(loss),
    }


def run_cases(cases: list[dict], measure, results: dict, json_path: Path) -> None:
    """Each case measured (``measure(case)``), or kept as skipped, or failed with its
    reason, into ``results["cases"]``; the JSON written after every one."""
    for case in cases:
        if "skipped" not in case:
            try:
                case = measure(case)
            except Exception as error:  # out of memory, a CUDA error: the row says so, the next runs
                first_line = (str(error).splitlines() or [""])[0]
                case = {**case, "error": f"{type(error).__name__}: {first_line}"}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        print(json.dumps(case), flush=True)
        results["cases"].append(case)
        json_path.write_text(json.dumps(results, indent=2))


def measure_loader(data: str, max_frames: int, workers: int, batches: int) -> float:
    """Real frames/s the loader alone delivers with ``workers`` processes (start-up excluded)."""
    stream = BatchStream(data, "train", num_workers=workers, max_frames=max_frames)
    iterator = iter(stream)
    next(iterator)  # the workers' start
    frames, started = 0, time.perf_counter()
    for count, batch in enumerate(iterator, 1):
        frames += int(batch.feature_lengths.sum())
        if count >= batches:
            break
    return frames / (time.perf_counter() - started)


def two_nccl_ranks(data: str, out: Path) -> dict | None:
    """One epoch of train/main.py on 2 GPUs (NCCL) through accelerate launch; None with fewer GPUs."""
    if torch.cuda.device_count() < 2:
        return None
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_config.yaml"),
    ]
    command += ["--num_processes", "2", str(REPO / "train" / "main.py"), "--config", str(MEDIUM)]
    command += [
        "--data",
        data,
        "--out",
        str(out / "nccl"),
        "epochs=1",
        "report_to=none",
        "checkpoint_every_minutes=0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        return {"error": result.stderr[-2000:]}
    row = (out / "nccl" / "metrics.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    return {"ranks": 2, "backend": "nccl", **dict(zip(header, values, strict=True))}


def cases_for(device: torch.device) -> list[dict]:
    """The precision × LSTM path cases this device runs, then the first of them again with an EMA of
    the weights; bf16 on a GPU without it natively is a row that says so (cuDNN and cuBLAS would
    only emulate it)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        cases = [{"precision": p, "lstm_impl": "packed", "average": "none"} for p in ("bf16", "fp16", "fp32")]
        if not native_bf16(device):
            cases[0]["skipped"] = f"no native bf16 (compute capability {major}.{minor} < 8.0)"
    else:
        precisions = ["bf16", "fp32"] if native_bf16(device) else ["fp32"]
        cases = [
            {"precision": p, "lstm_impl": i, "average": "none"}
            for p in precisions
            for i in ("packed", "padded")
        ]
    first = next(case for case in cases if "skipped" not in case)
    return [*cases, {**first, "average": "ema"}]


def print_table(results: dict) -> None:
    print(f"\n{results['device']}")
    columns = (
        "precision",
        "lstm_impl",
        "average",
        "real_frames_per_s",
        "lstm_dtype",
        "host_syncs_per_step",
        "peak_gpu_memory_gib",
        "steps",
        "mean_loss",
        "loss_finite",
    )
    print(" | ".join(columns))
    for case in results["cases"]:
        reason = case.get("skipped") or case.get("error")
        if reason:
            print(f"{case['precision']} | {case['lstm_impl']} | {case['average']} | {reason}")
        else:
            print(" | ".join(str(case[c]) for c in columns))
    print(
        f"loader alone ({results['loader_workers']} workers): {results['loader_frames_per_s']:,.0f} real frames/s; "
        f"fastest case consumes {results['fastest_case_frames_per_s']:,.0f}"
    )
    if results["two_ranks"]:
        print(f"2 NCCL ranks, one epoch: {results['two_ranks']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on a small set: the CPU smoke run")
    parser.add_argument("--steps", type=int, default=200, help="training steps per case")
    parser.add_argument("--seconds-per-case", type=float, default=25.0)
    parser.add_argument("--json", default="bench-gpu.json", help="where the table goes as JSON")
    args = parser.parse_args(argv)
    steps = 12 if args.tiny else args.steps
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        data = synthesise(root, 120 if args.tiny else 3000, (100, 400) if args.tiny else (400, 2000))
        print(f"synthesised and sharded in {time.perf_counter() - started:.1f} s", flush=True)
        results: dict = {"cases": []}
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

        def measure(case: dict) -> dict:
            return measure_case(data, root / "runs", case, steps, args.seconds_per_case, args.tiny)

        run_cases(cases_for(device), measure, results, Path(args.json))
        probe = _trainer(data, root / "runs" / "probe", ["report_to=none", *(TINY if args.tiny else [])])
        results["device"] = probe.hardware_line
        results["loader_workers"] = probe.config.num_workers
        results["loader_frames_per_s"] = round(
            measure_loader(data, probe.config.max_frames, probe.config.num_workers, 20 if args.tiny else 200),
            1,
        )
        measured = [c for c in results["cases"] if "real_frames_per_s" in c]
        results["fastest_case_frames_per_s"] = max((c["real_frames_per_s"] for c in measured), default=0.0)
        results["two_ranks"] = two_nccl_ranks(data, root / "runs")
    Path(args.json).write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"written to {args.json}")
    failed = [c for c in results["cases"] if "error" in c or not c.get("loss_finite", True)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

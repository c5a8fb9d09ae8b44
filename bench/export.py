"""The model through PyTorch, TorchScript and ONNX Runtime: utterances per second, start-up, file size.

    .venv/bin/python -m bench.export [--checkpoint demo/run] [--features demo/corpus/test/mfcc]
                                     [--utterances 160]

Exports the checkpoint both ways (``python -m eval export``), then times the model's forward pass
(raw features in, log-probabilities out: what transcription asks of each runtime; the decoding
after it is the same for all three) over the first ``--utterances`` files, one at a time and in
batches of 16 (length-sorted, as a service would batch), on one and on two threads. PyTorch's rows
normalise on the host first, as ``eval transcribe`` does. Start-up is a fresh process's wall
time to import the runtime, load the file and give the first utterance's log-probabilities.

Then the whole command a user runs, ``python -m eval transcribe`` (beam 50, its default), with
``--checkpoint`` (PyTorch) and with ``--model FILE.onnx`` (ONNX Runtime, no torch): wall time for one
utterance and for all of them, the utterances per second past the first, and the process's peak
resident memory.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("pytorch", "torchscript", "onnxruntime")
FIRST_UTTERANCE = """
import sys, numpy as np
runtime, path, features = sys.argv[1], sys.argv[2], np.load(sys.argv[3])[None]
lengths = np.array([features.shape[1]])
if runtime == "onnxruntime":
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {"features": features, "lengths": lengths})
elif runtime == "torchscript":
    import torch
    torch.jit.load(path)(torch.from_numpy(features), torch.from_numpy(lengths))
else:  # as eval transcribe --checkpoint does it
    from eval.options import Models
    from eval.recogniser import of_checkpoints
    of_checkpoints(Models((path,))).log_probs(features[0])
"""


def batches(utterances: list[np.ndarray], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Length-sorted batches of ``size``, zero-padded."""
    ordered = sorted(utterances, key=len)
    found = []
    for start in range(0, len(ordered), size):
        group = ordered[start : start + size]
        batch = np.zeros((len(group), len(group[-1]), group[0].shape[1]), np.float32)
        for i, features in enumerate(group):
            batch[i, : len(features)] = features
        found.append((batch, np.array([len(f) for f in group], np.int64)))
    return found


def runner(runtime: str, path: str, threads: int):
    """A function of (raw features batch, lengths) → log-probabilities, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    if runtime == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda features, lengths: session.run(None, {"features": features, "lengths": lengths})[0]
    if runtime == "torchscript":
        module = torch.jit.load(path)
        return lambda features, lengths: module(torch.from_numpy(features), torch.from_numpy(lengths))[0]
    from eval.model import load_model
    from shards.stats import FeatureStats

    model, card = load_model(path)
    stats = FeatureStats.from_document(card.stats, "the card")
    return lambda features, lengths: model(
        torch.from_numpy(stats.normalise(features)), torch.from_numpy(lengths)
    )[0]


def throughput(run, groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    import torch

    with torch.no_grad():
        run(*groups[0])  # warm-up
        started = time.perf_counter()
        for features, lengths in groups:
            run(features, lengths)
    return sum(len(lengths) for _, lengths in groups) / (time.perf_counter() - started)


def start_up(runtime: str, path: str, features: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FIRST_UTTERANCE, runtime, path, str(features)], check=True)
    return time.perf_counter() - started


PEAK_OF_CHILD = """
import resource, subprocess, sys
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(status)
"""  # a small parent: Linux counts a forked child's peak from its parent's resident size at the fork


def transcription(given: list[str], files: list[Path]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``python -m eval transcribe`` over ``files``."""
    command = [sys.executable, "-m", "eval", "transcribe", *given, *map(str, files)]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ...: {result.stderr[-2000:]}")
    return seconds, int(result.stdout) / 1024  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="demo/run")
    parser.add_argument("--features", default="demo/corpus/test/mfcc", type=Path)
    parser.add_argument("--utterances", type=int, default=160)
    args = parser.parse_args()
    from eval.export import Exporting, export
    from eval.model import model_url
    from eval.options import Models

    checkpoint = model_url(args.checkpoint)
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    paths = {"pytorch": checkpoint}
    for runtime, format, name in (
        ("torchscript", "torchscript", "model.ts"),
        ("onnxruntime", "onnx", "model.onnx"),
    ):
        export(Exporting(Models((checkpoint,)), format, str(folder / name)))
        paths[runtime] = str(folder / name)
    files = sorted(args.features.glob("*.npy"))[: args.utterances]
    utterances = [np.load(path) for path in files]
    frames = sum(map(len, utterances)) / len(utterances)
    print(f"{checkpoint}: {len(utterances)} utterances of {frames:.0f} frames on average")
    print(
        f"{'runtime':12} {'file MB':>8} {'start-up s':>10}  utt/s: {'b1 t1':>7} {'b1 t2':>7} {'b16 t1':>7} {'b16 t2':>7}"
    )
    speeds = {}
    for runtime in RUNTIMES:
        size = Path(paths[runtime]).stat().st_size / 1e6
        startup = start_up(runtime, paths[runtime], files[0])
        row = []
        for size_of_batch in (1, 16):
            for threads in (1, 2):
                row.append(
                    throughput(runner(runtime, paths[runtime], threads), batches(utterances, size_of_batch))
                )
        speeds[runtime] = row
        print(f"{runtime:12} {size:8.2f} {startup:10.2f}        " + " ".join(f"{v:7.1f}" for v in row))
    for runtime in RUNTIMES[1:]:
        ratios = [v / p for v, p in zip(speeds[runtime], speeds["pytorch"], strict=True)]
        print(f"{runtime} / pytorch: " + " ".join(f"{r:.2f}x" for r in ratios))
    print(
        f"\n{'eval transcribe':30} {'1 utt s':>8} {f'{len(files)} utt s':>9} {'utt/s after':>11} {'peak MB':>8}"
    )
    for name, given in (
        ("--checkpoint (PyTorch)", ["--checkpoint", checkpoint]),
        ("--model FILE.onnx (no torch)", ["--model", paths["onnxruntime"]]),
    ):
        one, _ = transcription(given, files[:1])
        every, peak = transcription(given, files)
        print(f"{name:30} {one:8.2f} {every:9.2f} {(len(files) - 1) / (every - one):11.1f} {peak:8.0f}")


if __name__ == "__main__":
    main()

"""Training throughput: this loop's batches vs a notebook-style loop, same model, same data, same time.

    .venv/bin/python -m bench.training [--data demo/shards] [--config train/configs/cpu.yaml] [--seconds 60] [key=value ...]

Each variant trains for --seconds (after one warm-up step) in this process and reports real
(unpadded) frames per second and padding efficiency:
  (a) this project: BatchStream batches under a frame budget from length-sorted shards,
      the BiLSTM over the padded batch (lstm_impl=auto: padded on CPU, packed on GPU);
  (b) notebook: every utterance in memory, shuffled fixed-size batches padded with pad_sequence,
      the same model and LSTM implementation;
  (c) notebook as usually written: (b) with pack_padded_sequence LSTMs.
Where the device computes in bfloat16 natively (GPU; CPU with AVX512-BF16/AMX) it also reports
(a) under bf16 autocast, as training runs there by default (config bf16: true).
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from shards.reader import BatchStream
from train.config import load_config
from train.hardware import native_bf16
from train.model import CTCModel


def _step(model, optimizer, features, lengths, labels, label_lengths, device, bf16: bool) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        log_probs, out = model(features.to(device), lengths.to(device))
    loss = F.ctc_loss(
        log_probs.float().transpose(0, 1),
        labels.to(device),
        out,
        label_lengths.to(device),
        zero_infinity=True,
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _measure(batches, model, seconds: float, device, bf16: bool = False) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    iterator = iter(batches)
    _step(model, optimizer, *next(iterator), device, bf16)  # warm-up
    real = padded = 0
    start = time.perf_counter()
    for features, lengths, labels, label_lengths in iterator:
        _step(model, optimizer, features, lengths, labels, label_lengths, device, bf16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        real += int(lengths.sum())
        padded += features.shape[0] * features.shape[1]
        if time.perf_counter() - start > seconds:
            break
    return real / (time.perf_counter() - start), real / padded


def _stream_batches(data: str, config):
    while True:
        for batch in BatchStream(data, "train", num_workers=config.num_workers, max_frames=config.max_frames):
            yield batch.features, batch.feature_lengths, batch.labels, batch.label_lengths


def _notebook_batches(data: str, batch_size: int, seed: int = 0):
    utterances = []
    for batch in BatchStream(data, "train", max_frames=10**9):  # load everything once, like a notebook
        for i in range(len(batch.ids)):
            n, m = int(batch.feature_lengths[i]), int(batch.label_lengths[i])
            utterances.append((batch.features[i, :n], batch.labels[i, :m]))
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(utterances), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [utterances[i] for i in order[start : start + batch_size]]
            features = pad_sequence([f for f, _ in chosen], batch_first=True)
            labels = pad_sequence([lab for _, lab in chosen], batch_first=True)
            yield (
                features,
                torch.tensor([len(f) for f, _ in chosen]),
                labels,
                torch.tensor([len(lab) for _, lab in chosen]),
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="demo/shards")
    parser.add_argument("--config", default="train/configs/cpu.yaml")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("overrides", nargs="*", help="key=value settings on top of --config")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feature_dim = BatchStream(args.data, "train").feature_dim
    # the notebook's batch size: as many average-length utterances as the frame budget holds
    rows = BatchStream(args.data, "train").rows
    batch_size = max(1, config.max_frames * len(rows) // sum(r["n_frames"] for r in rows))

    def model(impl: str) -> CTCModel:
        torch.manual_seed(0)
        return CTCModel(feature_dim, load_config(args.config, [*args.overrides, f"lstm_impl={impl}"])).to(
            device
        )

    results = {
        "(a) this loop": _measure(_stream_batches(args.data, config), model("auto"), args.seconds, device),
        f"(b) notebook, batch {batch_size}": _measure(
            _notebook_batches(args.data, batch_size), model("auto"), args.seconds, device
        ),
        "(c) notebook, packed LSTM": _measure(
            _notebook_batches(args.data, batch_size), model("packed"), args.seconds, device
        ),
    }
    if native_bf16(device):
        results["(a) this loop, bf16"] = _measure(
            _stream_batches(args.data, config), model("auto"), args.seconds, device, bf16=True
        )
    print(f"\n{device.type}, {args.config} {' '.join(args.overrides)}, {args.seconds:.0f} s each")
    print(f"{'variant':34} {'real frames/s':>14} {'padding eff.':>13}")
    for name, (speed, efficiency) in results.items():
        print(f"{name:34} {speed:14.0f} {efficiency:13.3f}")
    ours = results["(a) this loop"][0]
    for name, (speed, _) in list(results.items())[1:3]:
        print(f"this loop / {name[4:]} = {ours / speed:.2f}x")


if __name__ == "__main__":
    main()

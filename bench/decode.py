"""Decoding speed and quality: greedy, beam 10 and beam 50, on 1 and 2 threads, and with LMs.

    .venv/bin/python -m bench.decode [--checkpoint demo/run] [--data demo/shards] [--split dev]
                                     [--orders 3 5 --alpha 0.1 --beta 0.5]

Computes the trained checkpoint's log-probabilities for the split once, then times only the
decoding of them, and scores each setting (mean Levenshtein distance, PER). Each ``--orders`` LM
is estimated from the data's train split first (``python -m eval lm``; order 5 over the 41
classes is past the dense table, so it is scored row by row). ``utt/cpu-s`` divides by the CPU
time this process spent (one-thread rows), a per-core speed that a busy machine does not lower
as it lowers wall-clock ``utt/s``.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from eval import lm
from eval.decode import Decoding
from eval.model import load_model, model_url
from shards.reader import BatchStream
from train.metric import Score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="demo/run")
    parser.add_argument("--data", default="demo/shards")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--orders", type=int, nargs="*", default=[3, 5], help="LM orders to time at beam 50")
    parser.add_argument("--lm-only", action="store_true", help="time only the LM rows")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.5)
    args = parser.parse_args()
    url = model_url(args.checkpoint)
    model, _ = load_model(url)
    outputs = []
    with torch.no_grad():
        for batch in BatchStream(args.data, args.split):
            log_probs, lengths = model(batch.features, batch.feature_lengths)
            references = [batch.labels[i, : batch.label_lengths[i]].tolist() for i in range(len(batch.ids))]
            outputs.append((log_probs, lengths, references))
    utterances = sum(len(r) for _, _, r in outputs)
    frames = sum(int(lengths.sum()) for _, lengths, _ in outputs)
    print(f"{url} on {args.split}: {utterances} utterances, {frames / utterances:.0f} output frames each")
    print(
        f"{'decoder':40} {'threads':>7} {'utt/s':>8} {'utt/s/core':>10} {'utt/cpu-s':>9} {'distance':>9} {'PER':>7}"
    )
    settings = [] if args.lm_only else [("greedy", 1, 0, 0, None)]
    settings += (
        []
        if args.lm_only
        else [(f"beam {w}, top-n {n}", p, w, n, None) for n in (40, 10) for w in (10, 50) for p in (1, 2)]
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    for order in args.orders:
        path = str(folder / f"phones-{order}.arpa")
        lm.build(args.data, order, path)
        name = f"beam 50, top-n 10, {order}-gram a={args.alpha:g} b={args.beta:g}"
        settings += [(name, p, 50, 10, path) for p in (1, 2)]
    for name, threads, width, top_n, path in settings:
        alpha, beta = (args.alpha, args.beta) if path else (0.0, 0.0)
        decoder = Decoding(width, top_n, threads, path, alpha, beta).decoder()
        decoder.best(outputs[0][0][:2], outputs[0][1][:2])  # numba compiled, the pool started, before timing
        score = Score()
        start, cpu_start = time.perf_counter(), time.process_time()
        for log_probs, lengths, references in outputs:
            for hypotheses, reference in zip(decoder.best(log_probs, lengths), references, strict=True):
                score.add(hypotheses[0].labels, reference)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        decoder.close()
        speed = utterances / seconds
        per_cpu = f"{utterances / cpu_seconds:9.1f}" if threads == 1 else f"{'':9}"
        print(
            f"{name:40} {threads:7d} {speed:8.1f} {speed / threads:10.1f} {per_cpu} {score.mean_distance:9.4f} {score.per:7.2%}"
        )


if __name__ == "__main__":
    main()

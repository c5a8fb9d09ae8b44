"""Decoding speed and quality: greedy, beam 10 and beam 50, with 1 and 2 processes, and with an LM.

    .venv/bin/python -m bench.decode [--checkpoint demo/run] [--data demo/shards] [--split dev]
                                     [--lm demo/lm/phones-3.arpa --alpha 0.5 --beta 1]

Computes the trained checkpoint's log-probabilities for the split once, then times only the
decoding of them, and scores each setting (mean Levenshtein distance, PER). ``utt/cpu-s`` divides
by the CPU time this process spent (one-process rows), a per-core speed that a busy machine does
not lower as it lowers wall-clock ``utt/s``.
"""

import argparse
import time

import torch

from eval.decode import CTCBeamDecoder, GreedyDecoder
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
    parser.add_argument("--lm", help="also time beam 50 with this ARPA phoneme LM")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=1.0)
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
        f"{'decoder':34} {'processes':>9} {'utt/s':>8} {'utt/s/core':>10} {'utt/cpu-s':>9} {'distance':>9} {'PER':>7}"
    )
    settings = [("greedy", 1, None, 0, None)]
    settings += [(f"beam {w}, top-n {n}", p, w, n, None) for n in (40, 10) for w in (10, 50) for p in (1, 2)]
    if args.lm:
        name = f"beam 50, top-n 10, LM a={args.alpha:g} b={args.beta:g}"
        settings += [(name, p, 50, 10, args.lm) for p in (1, 2)]
    for name, processes, width, top_n, lm in settings:
        decoder = (
            GreedyDecoder()
            if width is None
            else CTCBeamDecoder(
                model_path=lm,
                alpha=args.alpha if lm else 0.0,
                beta=args.beta if lm else 0.0,
                beam_width=width,
                cutoff_top_n=top_n,
                num_processes=processes,
                beam_threshold=25.0,
            )
        )
        if processes > 1 or lm:  # let the pool start (and numba compile) before timing
            decoder.best(outputs[0][0][:1], outputs[0][1][:1])
        score = Score()
        start, cpu_start = time.perf_counter(), time.process_time()
        for log_probs, lengths, references in outputs:
            for hypotheses, reference in zip(decoder.best(log_probs, lengths), references, strict=True):
                score.add(hypotheses[0].labels, reference)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        decoder.close()
        speed = utterances / seconds
        per_cpu = f"{utterances / cpu_seconds:9.1f}" if processes == 1 else f"{'':9}"
        print(
            f"{name:34} {processes:9d} {speed:8.1f} {speed / processes:10.1f} {per_cpu} {score.mean_distance:9.4f} {score.per:7.2%}"
        )


if __name__ == "__main__":
    main()

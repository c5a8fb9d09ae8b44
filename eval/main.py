"""Evaluate a checkpoint: ``accelerate launch eval/main.py --checkpoint URL --data URL --split test ...``.

Also runs as plain ``python eval/main.py``. Each rank decodes a disjoint share of the split
(the reader's plan; repeats that only even out batch counts are ignored); rank 0 gathers
``(id, prediction)``, checks that every id of the split's manifest appears exactly once, writes
the submission in ``test_order.csv`` order (sorted ids for splits without one), scores it when
references exist (a labelled split, or ``--solution``) and appends a row to the leaderboard.
"""

import argparse
import datetime
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import fsspec
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python eval/main.py` from anywhere

from eval import leaderboard  # noqa: E402
from eval.decode import make_decoder  # noqa: E402
from eval.model import check_normalisation, load_model, model_url  # noqa: E402
from eval.submission import HEADERS, read_labels, score, submission_bytes  # noqa: E402
from shards import manifest  # noqa: E402
from shards.reader import BatchStream, read_dataset_stats  # noqa: E402
from shards.store import Store  # noqa: E402
from shards.vocab import to_string  # noqa: E402
from train.checkpoint import CheckpointError  # noqa: E402

log = logging.getLogger("eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="URL of a model.pt, or of a run folder (its latest)"
    )
    parser.add_argument("--data", required=True, help="dataset URL (normalised with the model's statistics)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=50, help="beam width; 1 = greedy")
    parser.add_argument("--top-n", type=int, default=10, help="tokens per frame a beam may expand")
    parser.add_argument("--submission", help="where to write the submission CSV (local or URL)")
    parser.add_argument(
        "--format", choices=sorted(HEADERS), default="id,predictions", help="submission header"
    )
    parser.add_argument("--solution", help="id,label CSV to score an unlabelled split against")
    parser.add_argument("--leaderboard", help="leaderboard CSV URL to append a row to")
    parser.add_argument("--run", help="run name for the leaderboard (default: the checkpoint's run folder)")
    parser.add_argument("--max-frames", type=int, default=40_000)
    parser.add_argument("--num-workers", type=int, default=1, help="loader processes per rank")
    parser.add_argument("--decoders", type=int, default=1, help="beam-search processes per rank")
    return parser.parse_args(argv)


def _order(data: str, split: str, ids: list[str]) -> list[str]:
    url = f"{data.rstrip('/')}/{split}/{manifest.ORDER}"
    try:
        with fsspec.open(url, "rt") as handle:
            listed = handle.read().split()[1:]
    except FileNotFoundError:
        return sorted(ids)
    missing = [i for i in listed if i not in set(ids)]
    if missing:
        raise ValueError(
            f"{url}: {len(missing)} listed ids are not in the dataset (e.g. {missing[:3]}; see rejects.csv)"
        )
    return listed


def _check_once(found: list[str], expected: list[str], where: str) -> None:
    counts = Counter(found)
    duplicated = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(expected) - counts.keys())
    extra = sorted(counts.keys() - set(expected))
    if duplicated or missing or extra:
        raise RuntimeError(
            f"{where}: decoded ids do not match the split: {len(missing)} missing {missing[:3]}, "
            f"{len(duplicated)} duplicated {duplicated[:3]}, {len(extra)} unknown {extra[:3]}"
        )


def evaluate(args: argparse.Namespace) -> dict | None:
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # gloo ranks when launched as multi_gpu on a CPU machine
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=1800))],
    )
    args.checkpoint = model_url(args.checkpoint)
    model, card = load_model(args.checkpoint)
    model.to(accelerator.device)
    check_normalisation(card, read_dataset_stats(args.data), args.checkpoint, args.data)
    stream = BatchStream(
        args.data,
        args.split,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=args.num_workers,
        max_frames=args.max_frames,
    )
    decoder = make_decoder(args.beam, args.decoders, args.top_n)
    results: list[tuple[str, str, str | None]] = []  # id, prediction, reference
    started = time.monotonic()
    with torch.no_grad():
        for batch in tqdm(
            stream, total=len(stream), desc=f"decode {args.split}", disable=not accelerator.is_main_process
        ):
            log_probs, lengths = model(
                batch.features.to(accelerator.device), batch.feature_lengths.to(accelerator.device)
            )
            for i, hypotheses in enumerate(decoder.best(log_probs, lengths)):
                if batch.repeated[i]:
                    continue
                reference = (
                    None
                    if batch.labels is None
                    else to_string(batch.labels[i, : batch.label_lengths[i]].tolist())
                )
                results.append((batch.ids[i], to_string(hypotheses[0].labels), reference))
    decoder.close()
    seconds = gather_object([time.monotonic() - started])
    gathered = gather_object(results)
    if not accelerator.is_main_process:
        return None
    expected = [row["id"] for row in stream.rows]
    _check_once([i for i, _, _ in gathered], expected, f"{args.data}/{args.split}")
    predictions = {i: p for i, p, _ in gathered}
    if args.submission:
        order = _order(args.data, args.split, expected)
        folder, _, name = args.submission.rstrip("/").rpartition("/")
        Store(folder or ".").publish_bytes(submission_bytes(predictions, order, args.format), name)
    references = {i: r for i, _, r in gathered if r is not None}
    if args.solution:
        references = read_labels(args.solution)
    distance = per = None
    if references:
        distance, per, _ = score(predictions, references, args.solution or f"{args.data}/{args.split}")
    row = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": args.run or args.checkpoint.rstrip("/").rsplit("/checkpoints/", 1)[0].rsplit("/", 1)[-1],
        "checkpoint": args.checkpoint,
        "epoch": card.get("epoch", ""),
        "step": card.get("step", ""),
        "split": args.split,
        "beam": args.beam,
        "distance": "" if distance is None else round(distance, 4),
        "per": "" if per is None else round(per, 5),
        "utterances": len(predictions),
        "decode_seconds": round(max(seconds), 2),
    }
    if args.leaderboard:
        leaderboard.append(args.leaderboard, row)
    return row


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        row = evaluate(args)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if row is not None:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

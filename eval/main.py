"""Evaluate a checkpoint: ``accelerate launch eval/main.py --checkpoint URL --data URL --split test ...``.

Also runs as plain ``python eval/main.py``. Each rank decodes a disjoint share of the split
(the reader's plan; repeats that only even out batch counts are ignored); rank 0 gathers
``(id, prediction)``, checks that every id of the split's manifest appears exactly once, writes
the submission in ``test_order.csv`` order (sorted ids for splits without one) with Kaggle's
positional ids and the id table beside it, scores it when references exist (a labelled split, or ``--solution``) and appends a row to the
leaderboard. Utterances the pipeline rejected keep their row, with an empty prediction.
"""

import argparse
import datetime
import json
import logging
import sys
import time
from collections import Counter

import fsspec
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object

from eval import leaderboard
from eval.decode import make_decoder
from eval.model import check_normalisation, load_model, model_url, place, run_folder
from shards import manifest, s3
from shards.kaggle import HEADERS, ids_bytes, ids_name, labels_bytes, read_labels
from shards.manifest import DatasetError
from shards.plan import DEFAULT_MAX_FRAMES
from shards.progress import Progress
from shards.reader import BatchStream
from shards.retry import IO_DEADLINE_S, with_retries
from shards.stats import read_dataset_stats
from shards.store import publish_at
from shards.vocab import to_string
from train.hardware import use_cuda
from train.metric import score
from train.rendezvous import join_process_group

log = logging.getLogger("eval")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """How a split is read and decoded: the options `eval watch` passes through unchanged."""
    parser.add_argument("--beam", type=int, default=50, help="beam width; 1 = greedy")
    parser.add_argument("--top-n", type=int, default=10, help="tokens per frame a beam may expand")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, help="padded frames per batch")
    parser.add_argument("--num-workers", type=int, default=1, help="loader processes per rank")
    parser.add_argument("--decoders", type=int, default=1, help="beam-search processes per rank")
    parser.add_argument("--lm", help="phoneme n-gram, ARPA (python -m eval lm), for the beam search")
    parser.add_argument(
        "--io-deadline-s",
        type=float,
        default=IO_DEADLINE_S,
        help="seconds an unreachable object store is waited out (shard reads, submission and leaderboard writes)",
    )


DECODING_OPTIONS = (
    "beam",
    "top_n",
    "max_frames",
    "num_workers",
    "decoders",
    "lm",
    "alpha",
    "beta",
    "io_deadline_s",
)


def add_lm_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, default=0.0, help="LM weight (natural-log probabilities)")
    parser.add_argument("--beta", type=float, default=0.0, help="bonus per phoneme")


def decoding_cells(lm: str | None, alpha: float, beta: float) -> dict:
    """The leaderboard's record of the LM and its weights: empty where unused (as rows before them)."""
    return {"lm": lm or "", "alpha": alpha if lm else "", "beta": beta if lm or beta else ""}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, help="URL of a model.pt, or of a run folder (its latest)"
    )
    parser.add_argument("--data", required=True, help="dataset URL (normalised with the model's statistics)")
    parser.add_argument("--split", default="test")
    add_decoding_arguments(parser)
    add_lm_weights(parser)
    parser.add_argument("--submission", help="where to write the submission CSV (local or URL)")
    parser.add_argument(
        "--format", choices=sorted(HEADERS), default="id,predictions", help="submission header"
    )
    parser.add_argument(
        "--solution", help="Kaggle solution CSV (id = row position in test_order.csv, label) to score against"
    )
    parser.add_argument("--leaderboard", help="leaderboard CSV URL to append a row to")
    parser.add_argument("--run", help="run name for the leaderboard (default: the checkpoint's run folder)")
    return parser.parse_args(argv)


def _read_optional(url: str) -> bytes | None:
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def submission_order(data: str, split: str, decoded: set[str]) -> tuple[list[str], dict[str, str]]:
    """Every id the submission lists, in order, and the pipeline's rejected ones with their reasons.

    The order is the split's ``test_order.csv`` (every source id, rejected ones included), or for a
    split without one its decoded and rejected ids sorted.
    """
    root = data.rstrip("/")
    rejects = _read_optional(f"{root}/{manifest.REJECTS}")
    reasons = (
        {}
        if rejects is None
        else {
            r.id: r.reason
            for r in manifest.read_rejects(rejects, f"{root}/{manifest.REJECTS}")
            if r.split == split
        }
    )
    order_url = f"{root}/{split}/{manifest.ORDER}"
    listed = _read_optional(order_url)
    order = sorted(decoded | reasons.keys()) if listed is None else manifest.read_order(listed, order_url)
    unknown = [i for i in order if i not in decoded and i not in reasons]
    unlisted = sorted(decoded - set(order))
    if unknown or unlisted:
        raise DatasetError(
            f"{order_url}: does not match the split: {len(unknown)} listed ids are neither in a shard nor "
            f"in rejects.csv (e.g. {unknown[:3]}), {len(unlisted)} ids in shards are not listed (e.g. {unlisted[:3]})"
        )
    return order, {i: reasons[i] for i in order if i not in decoded}


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


def start_ranks() -> Accelerator:
    """This process's rank (one, or those `accelerate launch` started)."""
    timeout = datetime.timedelta(seconds=1800)
    cuda = use_cuda("auto")
    join_process_group(timeout, cuda)  # so that `accelerate launch --max_restarts N` restarts work
    accelerator = Accelerator(
        cpu=not cuda,  # gloo ranks when launched as multi_gpu on a CPU machine
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
    )
    # every rank says so: a launch that silently ran one process is visible in the log (and tested)
    log.info("rank %d of %d on %s", accelerator.process_index, accelerator.num_processes, accelerator.device)
    return accelerator


def model_and_share(args: argparse.Namespace, accelerator: Accelerator) -> tuple:
    """The checkpoint's model on this rank's device (its input normalisation checked against the
    dataset's) and this rank's share of the split: (model, card, stream)."""
    model, card = load_model(args.checkpoint)
    place(model, accelerator.device)
    check_normalisation(card, read_dataset_stats(args.data), args.checkpoint, args.data)
    stream = BatchStream(
        args.data,
        args.split,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=args.num_workers,
        max_frames=args.max_frames,
        io_deadline_s=args.io_deadline_s,
        pin_memory=accelerator.device.type == "cuda",
    )
    return model, card, stream


def finish_ranks(accelerator: Accelerator) -> None:
    """Every rank waits for rank 0's writes, then all leave the process group together (a rank that
    exits while a peer still holds its gloo connections can be aborted by gloo's threads: SIGABRT)."""
    accelerator.wait_for_everyone()
    accelerator.state.destroy_process_group()


def evaluate(args: argparse.Namespace) -> dict | None:
    """Decode, write and score on every rank; rank 0's leaderboard row (None on the others)."""
    accelerator = start_ranks()
    row = _evaluate(args, accelerator)
    finish_ranks(accelerator)
    return row


def _evaluate(args: argparse.Namespace, accelerator: Accelerator) -> dict | None:
    for url in (args.checkpoint, args.data, args.solution, args.submission, args.leaderboard, args.lm):
        if url:  # credentials, bucket, endpoint: fail before decoding, not after
            s3.check_access(url)
    args.checkpoint = model_url(args.checkpoint)
    model, card, stream = model_and_share(args, accelerator)
    decoder = make_decoder(args.beam, args.decoders, args.top_n, args.lm, args.alpha, args.beta)
    results: list[tuple[str, str, str | None]] = []  # id, prediction, reference
    started = time.monotonic()
    shown = accelerator.is_main_process
    with torch.no_grad(), Progress(len(stream), f"decode {args.split}", "batch", shown=shown, log=log) as bar:
        for batch in stream:
            log_probs, lengths = model(batch.features.to(accelerator.device), batch.feature_lengths)
            for i, hypotheses in enumerate(decoder.best(log_probs, lengths)):
                if batch.repeated[i]:
                    continue
                reference = (
                    None
                    if batch.labels is None
                    else to_string(batch.labels[i, : batch.label_lengths[i]].tolist())
                )
                results.append((batch.ids[i], to_string(hypotheses[0].labels), reference))
            bar.update(1, {"utterances": str(len(results))})
    decoder.close()
    seconds = gather_object([time.monotonic() - started])
    gathered = gather_object(results)
    if not accelerator.is_main_process:
        return None
    expected = [row["id"] for row in stream.rows]
    _check_once([i for i, _, _ in gathered], expected, f"{args.data}/{args.split}")
    decoded = {i: p for i, p, _ in gathered}
    order, rejected = submission_order(args.data, args.split, set(decoded))
    if rejected:
        log.warning(
            "%d utterances of %s were rejected by the pipeline and get an empty prediction: %s",
            len(rejected),
            args.split,
            "; ".join(f"{i} ({reason})" for i, reason in list(rejected.items())[:10]),
        )
    predictions = [decoded.get(i, "") for i in order]
    if args.submission:
        submission, ids = labels_bytes(predictions, args.format), ids_bytes(order)
        with_retries(lambda: publish_at(args.submission, submission), args.submission, args.io_deadline_s)
        ids_url = ids_name(args.submission)
        with_retries(lambda: publish_at(ids_url, ids), ids_url, args.io_deadline_s)
    positional = dict(enumerate(predictions))
    if args.solution:  # Kaggle's file: every row, rejected utterances' empty predictions included
        references = read_labels(args.solution)
    else:  # a labelled split: the shards' transcripts, so only what was not rejected is scored
        by_id = {i: r for i, _, r in gathered if r is not None}
        references = {k: by_id[i] for k, i in enumerate(order) if i in by_id}
        positional = {k: positional[k] for k in references}
    result = (
        score(positional, references, args.solution or f"{args.data}/{args.split}") if references else None
    )
    row = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": args.run or run_folder(args.checkpoint).rsplit("/", 1)[-1],
        "checkpoint": args.checkpoint,
        "epoch": card.epoch,
        "step": card.step,
        "split": args.split,
        "beam": args.beam,
        "distance": "" if result is None else round(result.mean_distance, 4),
        "per": "" if result is None else round(result.per, 5),
        "utterances": len(predictions),
        "rejected": len(rejected),
        "decode_seconds": round(max(seconds), 2),
        **decoding_cells(args.lm, args.alpha, args.beta),
    }
    if args.leaderboard:
        with_retries(lambda: leaderboard.append(args.leaderboard, row), args.leaderboard, args.io_deadline_s)
    return row


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        row = evaluate(args)
    except Exception as error:
        urls = [args.checkpoint, args.data, args.submission, args.leaderboard, args.solution, args.lm]
        return s3.refused(error, urls)
    if row is not None:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

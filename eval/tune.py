"""``python -m eval tune``: the LM weight (alpha) and phoneme bonus (beta) that decode a split best.

The model runs once over the split (each rank its share, as evaluation reads it); every grid point
then decodes those posteriors with the LM and is scored on all ranks together. Rank 0 writes
``tune.csv`` (alpha, beta, distance, PER per point) and ``tune.png`` (a heat map of PER) to
``--out`` and prints the best pair. Tune on dev, never on test.
"""

import argparse
import csv
import io
import logging

import numpy as np
import torch
from accelerate.utils import gather_object

from eval.decode import make_decoder
from eval.main import finish_ranks, model_and_share, start_ranks
from eval.model import model_url
from shards.errors import UserError
from shards.progress import Progress
from shards.store import Store
from train.metric import Score
from train.report import figure_png, plt

log = logging.getLogger("eval.tune")


def grid(text: str) -> list[float]:
    """``start:stop:step`` (stop included) or one number."""
    parts = [float(p) for p in text.split(":")]
    if len(parts) == 1:
        return parts
    if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected start:stop:step with start <= stop, step > 0")
    start, stop, step = parts
    return [round(start + i * step, 6) for i in range(int(round((stop - start) / step)) + 1)]


def posteriors(args: argparse.Namespace, accelerator) -> list[tuple]:
    """This rank's share of the split: (log-probs, lengths, references, repeated) per batch."""
    args.checkpoint = model_url(args.checkpoint)
    model, _, stream = model_and_share(args, accelerator)
    if stream.index.labelled is False:
        raise UserError(f"{args.data}/{args.split}: no transcripts to tune against (use dev)")
    found = []
    shown = accelerator.is_main_process
    with (
        torch.no_grad(),
        Progress(len(stream), f"posteriors {args.split}", "batch", shown=shown, log=log) as bar,
    ):
        for batch in stream:
            log_probs, lengths = model(batch.features.to(accelerator.device), batch.feature_lengths)
            references = [batch.labels[i, : batch.label_lengths[i]].tolist() for i in range(len(batch.ids))]
            found.append((log_probs.cpu(), lengths.cpu(), references, batch.repeated.tolist()))
            bar.update()
    return found


def score_point(share: list[tuple], args: argparse.Namespace, alpha: float, beta: float) -> Score:
    decoder = make_decoder(args.beam, args.decoders, args.top_n, args.lm, alpha, beta)
    score = Score()
    for log_probs, lengths, references, repeated in share:
        for i, hypotheses in enumerate(decoder.best(log_probs, lengths)):
            if not repeated[i]:
                score.add(hypotheses[0].labels, references[i])
    decoder.close()
    return score


def tune(args: argparse.Namespace) -> dict | None:
    accelerator = start_ranks()
    result = _tune(args, accelerator)
    finish_ranks(accelerator)
    return result


def _tune(args: argparse.Namespace, accelerator) -> dict | None:
    share = posteriors(args, accelerator)
    rows = []
    points = [(a, b) for a in args.alpha for b in args.beta]
    with Progress(len(points), "grid", "point", shown=accelerator.is_main_process, log=log) as grid_progress:
        for alpha, beta in points:
            total = Score()
            for part in gather_object([score_point(share, args, alpha, beta)]):
                total = total.merge(part)
            rows.append({"alpha": alpha, "beta": beta, "distance": round(total.mean_distance, 4), "per": round(total.per, 5)})  # fmt: skip
            if accelerator.is_main_process:
                log.info(
                    "alpha %g beta %g: distance %.4f, PER %.3f%%",
                    alpha,
                    beta,
                    total.mean_distance,
                    100 * total.per,
                )
            grid_progress.update()
    if not accelerator.is_main_process:
        return None
    store = Store(args.out)
    store.publish_bytes(_table_bytes(rows), "tune.csv")
    store.publish_bytes(_heat_map(rows, args), "tune.png")
    best = min(rows, key=lambda row: (row["distance"], row["alpha"], row["beta"]))
    return {"best": best, "points": len(rows), "out": args.out}


def _table_bytes(rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, ["alpha", "beta", "distance", "per"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _heat_map(rows: list[dict], args: argparse.Namespace) -> bytes:
    alphas, betas = args.alpha, args.beta
    per = np.array([[100 * r["per"] for r in rows if r["alpha"] == a] for a in alphas])
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(betas), 1.2 + 0.6 * len(alphas)))
    image = axis.imshow(per, cmap="viridis_r", aspect="auto")
    for i in range(len(alphas)):
        for j in range(len(betas)):
            axis.text(j, i, f"{per[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white")
    best = np.unravel_index(np.argmin(per), per.shape)
    axis.add_patch(
        plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)
    )
    axis.set(xticks=range(len(betas)), xticklabels=[f"{b:g}" for b in betas], xlabel="beta (bonus per phoneme)",
             yticks=range(len(alphas)), yticklabels=[f"{a:g}" for a in alphas], ylabel="alpha (LM weight)",
             title=f"{args.split} PER % (beam {args.beam})")  # fmt: skip
    figure.colorbar(image, ax=axis, label="PER %")
    return figure_png(figure)

"""``python -m eval tune``: the LM weight (alpha) and phoneme bonus (beta) that decode a split best.

The model runs once over the split (each rank its share, as evaluation reads it); every grid point
then decodes those posteriors with the LM and is scored on all ranks together. Rank 0 writes
``tune.csv`` (alpha, beta, distance, PER per point) and ``tune.png`` (a heat map of PER) to
``--out`` and prints the best pair. Tune on dev, never on test.
"""

import argparse
import csv
import dataclasses
import io
import json
import logging

import numpy as np
from accelerate.utils import gather_object

from eval.options import (
    Decoding,
    Models,
    Reading,
    Url,
    add_decoding_arguments,
    add_models_arguments,
    add_reading_arguments,
    request_of,
)
from eval.ranks import forward, model_and_share, ranks
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


@dataclasses.dataclass(frozen=True)
class Tuning:
    models: Models  # one checkpoint, or an ensemble
    data: str
    lm: str | None  # required: the grid weighs it
    out: str  # folder for tune.csv and tune.png
    split: str = "dev"
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    betas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    decoding: Decoding = Decoding()  # its lm, alpha and beta are the grid's
    reading: Reading = Reading()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_models_arguments(parser)
    parser.add_argument("--data", type=Url, required=True)
    parser.add_argument("--split", default=Tuning.split)
    add_decoding_arguments(parser, weights=False)
    add_reading_arguments(parser)
    parser.add_argument(
        "--alpha", dest="alphas", type=grid, default=Tuning.alphas, help="LM weights, start:stop:step"
    )
    parser.add_argument(
        "--beta", dest="betas", type=grid, default=Tuning.betas, help="bonuses per phoneme, start:stop:step"
    )
    parser.add_argument(
        "--out", type=Url, required=True, help="folder for tune.csv and tune.png (local or URL)"
    )


def posteriors(request: Tuning, accelerator) -> list[tuple]:
    """This rank's share of the split: (log-probs, lengths, references, repeated) per batch."""
    model, _, stream = model_and_share(
        request.models, request.data, request.split, request.reading, accelerator
    )
    if stream.index.labelled is False:
        raise UserError(f"{request.data}/{request.split}: no transcripts to tune against (use dev)")
    found = []
    for batch, log_probs, lengths in forward(model, stream, accelerator, f"posteriors {request.split}"):
        references = [batch.labels[i, : batch.label_lengths[i]].tolist() for i in range(len(batch.ids))]
        found.append((log_probs.cpu(), lengths.cpu(), references, batch.repeated.tolist()))
    return found


def score_point(share: list[tuple], decoding: Decoding) -> Score:
    decoder = decoding.decoder()
    score = Score()
    for log_probs, lengths, references, repeated in share:
        for i, hypotheses in enumerate(decoder.best(log_probs, lengths)):
            if not repeated[i]:
                score.add(hypotheses[0].labels, references[i])
    decoder.close()
    return score


def tune(request: Tuning) -> dict | None:
    """Every grid point scored on all ranks together; rank 0 writes the table and heat map and
    returns the best point (None on the others)."""
    if request.lm is None:
        raise UserError("tune needs --lm (an ARPA file: python -m eval lm)")
    with ranks() as accelerator:
        share = posteriors(request, accelerator)
        rows = []
        points = [(a, b) for a in request.alphas for b in request.betas]
        with Progress(len(points), "grid", "point", shown=accelerator.is_main_process, log=log) as progress:
            for alpha, beta in points:
                decoding = dataclasses.replace(request.decoding, lm=request.lm, alpha=alpha, beta=beta)
                total = Score()
                for part in gather_object([score_point(share, decoding)]):
                    total = total.merge(part)
                rows.append(
                    {
                        "alpha": alpha,
                        "beta": beta,
                        "distance": round(total.mean_distance, 4),
                        "per": round(total.per, 5),
                    }
                )
                if accelerator.is_main_process:
                    log.info(
                        "alpha %g beta %g: distance %.4f, PER %.3f%%",
                        alpha,
                        beta,
                        total.mean_distance,
                        100 * total.per,
                    )
                progress.update()
        if not accelerator.is_main_process:
            return None
        store = Store(request.out)
        store.publish_bytes(_table_bytes(rows), "tune.csv")
        store.publish_bytes(_heat_map(rows, request), "tune.png")
        best = min(rows, key=lambda row: (row["distance"], row["alpha"], row["beta"]))
        return {"best": best, "points": len(rows), "out": request.out}


def _table_bytes(rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, ["alpha", "beta", "distance", "per"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _heat_map(rows: list[dict], request: Tuning) -> bytes:
    alphas, betas = request.alphas, request.betas
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
    axis.set(
        xticks=range(len(betas)),
        xticklabels=[f"{b:g}" for b in betas],
        xlabel="beta (bonus per phoneme)",
        yticks=range(len(alphas)),
        yticklabels=[f"{a:g}" for a in alphas],
        ylabel="alpha (LM weight)",
        title=f"{request.split} PER % (beam {request.decoding.beam})",
    )
    figure.colorbar(image, ax=axis, label="PER %")
    return figure_png(figure)


def run(args: argparse.Namespace) -> int:
    decoding = request_of(Decoding, args, alpha=Decoding.alpha, beta=Decoding.beta)  # the grid's instead
    result = tune(request_of(Tuning, args, decoding=decoding))
    if result is not None:
        print(json.dumps(result))
    return 0

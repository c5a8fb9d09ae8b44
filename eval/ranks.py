"""The ranks of a distributed evaluation: this process's place among those `accelerate launch`
started (or the only one), the model on its device, its share of a split, and leaving together."""

import contextlib
import datetime
import logging
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from eval.ensemble import Ensemble, load_models
from eval.model import check_normalisation, place
from eval.options import Models, Reading
from shards.batch import Batch
from shards.progress import Progress
from shards.reader import BatchStream
from shards.stats import read_dataset_stats
from train.checkpoint import ModelCard
from train.hardware import use_cuda
from train.model import CTCModel
from train.rendezvous import join_process_group

log = logging.getLogger("eval")


@contextlib.contextmanager
def ranks() -> Iterator[Accelerator]:
    """This process's rank for the block; on leaving it, every rank waits for rank 0's writes and
    all leave the process group together (a rank that exits while a peer still holds its gloo
    connections can be aborted by gloo's threads: SIGABRT)."""
    timeout = datetime.timedelta(seconds=1800)
    cuda = use_cuda("auto")
    join_process_group(timeout, cuda)  # so that `accelerate launch --max_restarts N` restarts work
    accelerator = Accelerator(
        cpu=not cuda,  # gloo ranks when launched as multi_gpu on a CPU machine
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
    )
    # every rank says so: a launch that silently ran one process is visible in the log (and tested)
    log.info("rank %d of %d on %s", accelerator.process_index, accelerator.num_processes, accelerator.device)
    yield accelerator
    accelerator.wait_for_everyone()
    accelerator.state.destroy_process_group()


def model_and_share(
    models: Models, data: str, split: str, reading: Reading, accelerator: Accelerator
) -> tuple[CTCModel | Ensemble, list[ModelCard], BatchStream]:
    """The model (one checkpoint's, or an ensemble) on this rank's device, each member's input
    normalisation checked against the dataset's, its cards, and this rank's share of the split."""
    model, cards = load_models(models)
    place(model, accelerator.device)
    dataset_stats = read_dataset_stats(data)
    for card, checkpoint in zip(cards, models.checkpoints, strict=True):
        check_normalisation(card, dataset_stats, checkpoint, data)
    stream = BatchStream(
        data,
        split,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=reading.num_workers,
        max_frames=reading.max_frames,
        io_deadline_s=reading.io_deadline_s,
        pin_memory=accelerator.device.type == "cuda",
    )
    return model, cards, stream


def forward(
    model: CTCModel | Ensemble, stream: BatchStream, accelerator: Accelerator, what: str
) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """Each batch of this rank's share with the model's log-probabilities and output lengths, under
    ``no_grad``, with a progress bar (rank 0's) named ``what``."""
    shown = accelerator.is_main_process
    with torch.no_grad(), Progress(len(stream), what, "batch", shown=shown, log=log) as bar:
        for batch in stream:
            log_probs, lengths = model(batch.features.to(accelerator.device), batch.feature_lengths)
            yield batch, log_probs, lengths
            bar.update()

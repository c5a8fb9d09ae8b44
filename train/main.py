"""Train the CTC model on shards: ``accelerate launch train/main.py --config C --data URL --out URL [k=v ...]``.

Also runs as plain ``python train/main.py`` (one process). Each rank streams its own share of
the shards (``shards.reader.BatchStream``; the loader is never handed to ``accelerator.prepare``,
so batch counts are equal by construction), validates with greedy decoding on its share of the
dev split, and rank 0 writes metrics, curves and checkpoints to the output URL.
"""

import argparse
import contextlib
import datetime
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from typing import NoReturn

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object

from shards import s3
from shards.errors import write_error_lines
from shards.frontend import read_front_end
from shards.reader import BatchStream
from shards.retry import with_retries
from shards.stats import read_dataset_stats
from shards.store import Store
from train import checkpoint, hardware, monitor, report, resume, together
from train.augment import Augment
from train.average import WeightAverage
from train.config import ConfigError, TrainConfig, load_config
from train.metric import Score, greedy_paths
from train.model import CTCModel, HostLengths
from train.preemption import EXIT_PREEMPTED, Preempted, PreemptionWatch
from train.rendezvous import join_process_group

log = logging.getLogger("train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file (train/configs/*.yaml); defaults without it")
    parser.add_argument("--data", required=True, help="dataset URL written by `python -m pipeline`")
    parser.add_argument("--out", required=True, help="run folder URL: checkpoints, metrics.csv, curves.png")
    parser.add_argument(
        "--resume",
        choices=("auto", "never", "must"),
        default="auto",
        help="auto (default): continue OUT's latest checkpoint if it has one; never: refuse if it has one; "
        "must: refuse if it has none",
    )
    parser.add_argument(
        "--timeout", type=int, default=1800, help="seconds a collective may wait (hang guard)"
    )
    parser.add_argument(
        "--log-dir",
        help="tracker files (TensorBoard…): default the run folder when local, else runs/<run name>",
    )
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. epochs=2")
    return parser.parse_args(argv)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
        )
    total = max(config.epochs * steps_per_epoch, 1)

    def warmup_then_cosine(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)


def ctc_loss(
    log_probs: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor
) -> torch.Tensor:
    """Mean CTC loss, the lengths given on the host. The step's remaining waits for the GPU are in
    here, in native code: the CUDA CTC loss (LossCTC.cu) copies the lengths and the targets' batch
    offsets to the GPU with blocking copies in its forward and again in its backward; given device
    lengths it would first copy them back to the host, which is one wait more. bench.gpu counts them."""
    return F.ctc_loss(
        log_probs.transpose(0, 1),  # (T, B, C)
        labels,
        lengths,
        label_lengths,
        blank=0,
        zero_infinity=True,
    )


def replica_checksum(model: torch.nn.Module) -> list[float]:
    """One sum per parameter and buffer (BatchNorm's running statistics are saved and validated
    with too); once an epoch, so one host read of them all is fine."""
    return torch.stack([t.detach().double().sum() for t in model.state_dict().values()]).tolist()


def average_buffers(model: torch.nn.Module, world: int) -> None:
    """Every rank's floating-point buffers replaced by their mean over the ranks, identical on all.

    DDP broadcasts rank 0's buffers before each forward, and then each rank's BatchNorm updates its
    own running statistics with its own batch: after an epoch the ranks hold different ones, so each
    would validate its share of dev with other weights than the checkpoint saves. Their mean is the
    estimate from every rank's last batches (what the next forward broadcasts too)."""
    if world == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer)
            buffer.div_(world)


class Trainer:
    """One rank's training run. Built in the order the run needs: the ranks and their device, the
    data, the model and its optimiser, then the run's own state; :meth:`run` then trains."""

    def __init__(self, args: argparse.Namespace, config: TrainConfig):
        self.args, self.config = args, config
        self._join_ranks()
        self._choose_precision()
        self._open_data()
        self._build_model()
        self._start_run_state()
        torch.manual_seed(config.seed + 1 + self.rank)  # different augmentation and dropout per rank

    def _join_ranks(self) -> None:
        """The process group (NCCL on GPUs, gloo on CPUs), Accelerate and its trackers."""
        timeout = datetime.timedelta(seconds=self.args.timeout)
        cuda = hardware.use_cuda(self.config.device)
        join_process_group(timeout, cuda)
        # every rank has the launcher's environment: all refuse alike, and main() lets none leave
        # before every one has said so (LauncherPrecision)
        hardware.refuse_launcher_precision(os.environ.get("ACCELERATE_MIXED_PRECISION", "no"))
        self.accelerator = Accelerator(
            cpu=not cuda,  # gloo ranks when launched as multi_gpu on a CPU machine
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
            log_with=monitor.trackers(self.config.report_to) or None,
            project_dir=monitor.log_dir(self.args.out, self.args.log_dir),
        )
        self.accelerator.init_trackers(
            monitor.TRACKER_FOLDER, config=monitor.hyperparameters(asdict(self.config))
        )
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device

    def _choose_precision(self) -> None:
        """The training forward's precision on this device, and the start-up line that says it
        (validation, like eval/, decodes in float32)."""
        self.precision = hardware.resolve_precision(self.config.precision, self.device)
        hardware.check_lstm_path(self.config.lstm_impl, self.device)
        hardware.allow_tf32(self.device)
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        self.hardware_line = hardware.describe(self.device, backend, self.world, self.precision)
        log.info("%s", self.hardware_line)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _open_data(self) -> None:
        """This rank's train and dev streams, the dataset's statistics and front-end record."""
        config = self.config
        common = dict(
            rank=self.rank,
            world_size=self.world,
            num_workers=config.num_workers,
            seed=config.seed,
            io_deadline_s=config.io_deadline_s,
            pin_memory=self.device.type == "cuda",
        )
        self.train_stream = BatchStream(
            self.args.data,
            "train",
            max_frames=config.max_frames,
            sources=config.train_source_folders,
            **common,
        )
        if config.train_sources:
            log.info("train: %d utterances from %s", len(self.train_stream.rows), config.train_sources)
        self.dev_stream = BatchStream(self.args.data, "dev", max_frames=config.max_frames, **common)
        self.stats = read_dataset_stats(self.args.data)
        self.front_end = read_front_end(self.args.data)  # None: unknown (Kaggle's files record none)
        self.epoch_batches = len(self.train_stream)  # this epoch's, set again as each epoch starts

    def _build_model(self) -> None:
        """The model (the same initial weights on every rank), optimiser, schedule and augmentation."""
        config = self.config
        torch.manual_seed(config.seed)
        model = CTCModel(self.train_stream.feature_dim, config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(self.epoch_batches / config.grad_accum)
        self.scheduler = make_scheduler(config, optimizer, self.steps_per_epoch)
        # whether the last optimiser step changed the weights: fp16's GradScaler skips a step whose
        # gradients overflowed (without calling the optimiser), and the schedule must not move then
        self.updated = False
        optimizer.register_step_post_hook(lambda *_: setattr(self, "updated", True))
        self._check_ctc_frames(model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.average = WeightAverage.of(config, self.accelerator.unwrap_model(self.model))  # None: off
        self.augment = Augment(config, self.stats).to(self.device)

    def _check_ctc_frames(self, model: CTCModel) -> None:
        """Every labelled utterance keeps enough output frames for CTC at this time stride (warned
        about, or refused when many do not: monitor.ctc_frame_check)."""
        for stream in (self.train_stream, self.dev_stream):
            frames = model.output_lengths(torch.tensor([row["n_frames"] for row in stream.rows]))
            found = monitor.ctc_frame_check(stream.split, stream.rows, frames, self.config.time_stride)
            if found:
                log.warning("%s", found)

    def _start_run_state(self) -> None:
        """Where the run stands (step, history, best, totals, clocks), and its checkpoint writer."""
        self.store = Store(self.args.out)
        self.history: list[dict] = []
        self.step = 0
        self.elapsed = 0.0  # seconds of training and validation so far, over all sessions
        self.best: tuple[float, int] | None = None  # (dev distance, epoch)
        self.totals = monitor.EpochTotals()  # of the epoch in progress, on this rank
        self.window = monitor.StepWindow()  # since the last tracker record
        # the step's figures stay on the device and are read once per log_every_steps (_settle)
        self.grad_norm = torch.zeros((), device=self.device)
        self.unread_loss = torch.zeros((), device=self.device)
        self.loss_shown: float | None = None
        self.clock = time.monotonic()  # from when the next seconds are accounted
        self.preemption = PreemptionWatch()
        self.writer = checkpoint.CheckpointWriter(self.store, self.config.io_deadline_s)  # rank 0's
        self.last_checkpoint = time.monotonic()

    # --- checkpoints ---------------------------------------------------------------------

    def fingerprints(self) -> dict[str, str]:
        return {"train": self.train_stream.index.fingerprint, "dev": self.dev_stream.index.fingerprint}

    def resume(self, url: str) -> None:
        state = checkpoint.TrainingState.load(url)
        changed = checkpoint.differences(state.config, asdict(self.config))
        if changed:
            raise checkpoint.CheckpointError(f"{url}: saved with other settings: {'; '.join(changed)}")
        if state.fingerprints != self.fingerprints():
            raise checkpoint.CheckpointError(
                f"{url}: saved for another dataset (index fingerprints {state.fingerprints} differ from "
                f"{self.args.data}'s {self.fingerprints()})"
            )
        try:
            self.accelerator.unwrap_model(self.model).load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as error:
            raise checkpoint.CheckpointError(f"{url}: does not fit this model/config: {error}") from error
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        if self.average is not None:
            self.average.load_state_dict(state.average, url)
        self.train_stream.load_state_dict(state.train_stream)
        self.dev_stream.load_state_dict(state.dev_stream)
        self.history, self.step, self.elapsed = state.history, state.step, state.elapsed_s
        self.best = tuple(state.best) if state.best else None
        if state.world_size == self.world:
            self.totals = monitor.EpochTotals.from_dict(state.progress[self.rank])
            checkpoint.set_rng_state(state.rng[self.rank], self.device)
        else:  # elastic resume: the streams re-plan the rest of the epoch over this many ranks
            log.warning(
                "%s was saved by %d ranks, resuming on %d: the rest of epoch %d is re-planned over %d ranks "
                "(every utterance still once), and random streams restart from the seed and step",
                url,
                state.world_size,
                self.world,
                self.train_stream.epoch,
                self.world,
            )
            # rank 0 carries the old ranks' totals, so that the epoch's sums stay right
            saved = [monitor.EpochTotals.from_dict(p) for p in state.progress]
            self.totals = monitor.EpochTotals.over_ranks(saved) if self.rank == 0 else monitor.EpochTotals()
            checkpoint.seed_everything(self.config.seed + 1 + self.rank, self.step)
        log.info(
            "resumed from %s at epoch %d, batch %d", url, self.train_stream.epoch, self.train_stream.consumed
        )

    def save(self, folder: str) -> None:
        """A checkpoint of this very moment (every rank calls it: the random states are gathered),
        written on rank 0's writer once the one in flight is."""
        together.on_rank_0(self.accelerator, self.writer.wait, self.explain)
        self._settle()
        per_rank = gather_object([(checkpoint.rng_state(self.device), asdict(self.totals))])  # one collective
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.model)
        weights = model.state_dict()  # the writer copies it to host memory, once for both files
        averaged = None if self.average is None else self.average.with_statistics_of(model).state_dict()
        last = self.history[-1] if self.history else {}
        state = checkpoint.TrainingState(
            model=weights,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            train_stream=self.train_stream.state_dict(),
            dev_stream=self.dev_stream.state_dict(),
            history=self.history,
            step=self.step,
            elapsed_s=self.elapsed,
            best=list(self.best) if self.best else None,
            progress=[p for _, p in per_rank],
            rng=[r for r, _ in per_rank],
            world_size=self.world,
            config=asdict(self.config),
            fingerprints=self.fingerprints(),
            average={} if self.average is None else self.average.state_dict(),
        )
        card = checkpoint.ModelCard(
            model=weights,
            config=asdict(self.config),
            feature_dim=self.train_stream.feature_dim,
            stats=self.stats,
            epoch=last.get("epoch", -1),  # the last finished epoch
            step=self.step,
            dev_distance=last.get("dev_distance"),
            front_end=None if self.front_end is None else asdict(self.front_end),
            averaged=averaged,
            averaged_dev_distance=last.get("dev_distance_averaged"),
        )
        best = checkpoint.epoch_folder(self.best[1]) if self.best else None
        self.writer.submit(folder, state, card, self.config.keep_last, best)
        self.last_checkpoint = time.monotonic()

    # --- one epoch -----------------------------------------------------------------------

    def _after_step(self) -> None:
        """Once per optimiser step: agree on preemption and on timed checkpoints, then act on both."""
        every_steps, every_minutes = self.config.checkpoint_every_steps, self.config.checkpoint_every_minutes
        due = every_minutes > 0 and time.monotonic() - self.last_checkpoint >= 60 * every_minutes
        if due:  # asked once: the checkpoint follows at the next step, which restarts the clock again
            self.last_checkpoint = time.monotonic()
        # the step's one collective: the ranks act together on the flags of the step before
        preempted, timed = self.preemption.agree(self.accelerator, due)
        if preempted or timed or (every_steps > 0 and self.step % every_steps == 0):
            self._account_time()
            self.save(checkpoint.step_folder(self.step))
        if preempted:
            # the checkpoint is complete before anyone exits
            together.on_rank_0(self.accelerator, self.writer.wait, self.explain)
            raise Preempted(
                f"checkpoint at step {self.step} ({self.args.out}/{checkpoint.step_folder(self.step)})"
            )

    def _account_time(self) -> None:
        now = time.monotonic()
        self.totals.seconds += now - self.clock
        self.elapsed += now - self.clock
        self.clock = now

    def train_step(self, host_batch) -> int:
        """One batch as training runs it: forward and backward, and where the batch closes an
        optimiser step, the step, the schedule, the periodic record and the ranks' agreement on
        preemption and checkpoints. The batch's real frames."""
        stepped, frames = self._train_batch(host_batch)
        if stepped:
            self.step += 1
            if self.config.scheduler == "cosine" and self.updated:
                self.scheduler.step()
            if self.average is not None and self.updated:
                self.average.update(self.accelerator.unwrap_model(self.model), self.step)
            if self.step % self.config.log_every_steps == 0:
                self._settle()  # the host reads of a record: loss and gradient norm
                lr = self.optimizer.param_groups[0]["lr"]
                self.accelerator.log(self.window.figures(lr, float(self.grad_norm)), step=self.step)
                self.window = monitor.StepWindow()
            self._after_step()
        return frames

    def _train_batch(self, host_batch) -> tuple[bool, int]:
        """Forward, backward and, where the batch closes one, an optimiser step: whether it stepped,
        and the batch's real frames. Nothing here waits for the GPU: lengths, frame and
        utterance counts come from the batch's host copy, the loss and gradient norm stay on the
        device until _settle."""
        closes, size = self._accumulation()
        batch = host_batch.to(self.device)
        with contextlib.nullcontext() if closes else self.accelerator.no_sync(self.model):
            features, lengths = self.augment(batch.features, host_batch.feature_lengths)
            with hardware.autocast(self.precision, self.device):  # HostLengths: DDP leaves them on the host
                log_probs, lengths = self.model(features, HostLengths(lengths))
            loss = ctc_loss(log_probs, lengths, batch.labels, host_batch.label_lengths)
            self.accelerator.backward(self.scaler.scale(loss / size))  # the step's mean gradient
        if closes:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.updated = False
            self.scaler.step(self.optimizer)  # skipped (fp16) when a gradient overflowed: updated stays False
            self.scaler.update()
            self.optimizer.zero_grad()
        self.unread_loss += loss.detach()
        frames = int(host_batch.feature_lengths.sum())
        self.totals.add_batch(frames, int((~host_batch.repeated).sum()))
        self.window.add(frames, batch.features.shape[0] * batch.features.shape[1])
        return closes, frames

    def _accumulation(self) -> tuple[bool, int]:
        """Whether the batch just taken closes an optimiser step, and how many batches that step
        sums: ``grad_accum``, fewer for the last step of an epoch, which always steps (so no
        gradient is carried into the next epoch, and an epoch has ceil(batches / grad_accum) steps)."""
        every, taken = self.config.grad_accum, self.train_stream.consumed  # this batch included
        start = (taken - 1) // every * every
        size = min(every, self.epoch_batches - start)
        return taken - start == size, size

    def _settle(self) -> None:
        """The device's running loss into the epoch's and the window's totals: one host read."""
        loss = float(self.unread_loss)
        self.unread_loss.zero_()
        self.totals.loss_sum += loss
        self.window.loss_sum += loss
        if self.window.batches:
            self.loss_shown = self.window.loss_sum / self.window.batches

    def train_epoch(self) -> monitor.EpochTotals:
        """The epoch's totals over all ranks, continuing a resumed one where it stopped."""
        self.model.train()
        self.augment.train()
        self.clock = time.monotonic()
        self.epoch_batches = len(self.train_stream)
        bar = monitor.EpochProgress(
            len(self.train_stream),
            self.train_stream.consumed,
            f"epoch {self.train_stream.epoch}",
            self.accelerator.is_main_process,
        )
        with bar:
            for batch in self.train_stream:
                bar.add(self.train_step(batch), self.loss_shown)
        self._settle()
        self._account_time()
        per_rank = gather_object([self.totals])
        self.totals = monitor.EpochTotals()
        return monitor.EpochTotals.over_ranks(per_rank)

    @torch.no_grad()
    def validate(self) -> dict[str, Score]:
        """Greedy dev scores of the weights the checkpoint saves, the live ones and, when the run
        averages, the averaged ones: the ranks' buffers are made one, and every rank is checked to
        hold the same weights and buffers, before any rank scores."""
        model = self.accelerator.unwrap_model(self.model)
        average_buffers(model, self.world)
        scored = {"live": model}
        if self.average is not None:
            scored["averaged"] = self.average.with_statistics_of(model)
        self.check_replicas(list(scored.values()))
        return {name: self._dev_score(weights) for name, weights in scored.items()}

    def _dev_score(self, model: torch.nn.Module) -> Score:
        """One model's greedy score on the whole dev split (each rank its share, then merged)."""
        model.eval()
        score = Score()
        for batch in self.dev_stream:  # labels, lengths and flags read from the host copy
            log_probs, lengths = model(
                batch.features.to(self.device, non_blocking=True), batch.feature_lengths
            )
            paths = greedy_paths(log_probs, lengths)  # the batch's one transfer to the host
            for i, path in enumerate(paths):
                if not batch.repeated[i]:  # a repeat only evens out batch counts
                    score.add_path(path, batch.labels[i, : batch.label_lengths[i]].tolist())
        total = Score()
        for part in gather_object([score]):
            total = total.merge(part)
        return total

    def explain(self, error: BaseException) -> str | None:
        return refusal(error, self.args)

    def _publish_metrics(self) -> None:
        """metrics.csv and curves.png of the history so far (rank 0), outages retried."""
        with_retries(
            lambda: report.publish(self.store, self.history), self.args.out, self.config.io_deadline_s
        )

    def check_replicas(self, models: list[torch.nn.Module]) -> None:
        checksums = gather_object([[c for model in models for c in replica_checksum(model)]])
        if any(c != checksums[0] for c in checksums):
            raise RuntimeError("model replicas differ across ranks: weights or buffers were not synchronised")
        if self.world > 1:
            log.info("weights and buffers identical on %d ranks", self.world)

    def run(self) -> None:
        """Epoch after epoch: train, validate, record, checkpoint and publish; then the last write."""
        while self.train_stream.epoch < self.config.epochs:
            epoch = self.train_stream.epoch
            trained = self.train_epoch()
            validation_start = time.monotonic()
            dev = self.validate()
            self.elapsed += time.monotonic() - validation_start
            self._record(epoch, trained, dev)
            self.save(checkpoint.epoch_folder(epoch))
            together.on_rank_0(self.accelerator, self._publish_metrics, self.explain)
        # rank 0 alone: no collective follows, and the others leave the group as they always have
        self.writer.wait()
        self.accelerator.end_training()

    def _record(self, epoch: int, trained: monitor.EpochTotals, dev: dict[str, Score]) -> None:
        """An epoch's results into the plateau schedule (the live weights': they are what trains),
        the best (of the weights evaluation uses: the averaged ones when the run averages), the
        history and the trackers."""
        live, averaged = dev["live"], dev.get("averaged")
        if self.config.scheduler == "plateau":
            self.scheduler.step(live.mean_distance)
        headline = (averaged or live).mean_distance
        if self.best is None or headline < self.best[0]:
            self.best = (headline, epoch)
        row = {
            "epoch": epoch,
            "step": self.step,
            "train_loss": round(trained.mean_loss, 5),
            "train_utterances": trained.utterances,  # each once an epoch, whatever the resumes
            "dev_distance": round(live.mean_distance, 4),
            "dev_per": round(live.per, 5),
            "dev_blank_share": round(live.blank_share, 4),  # of the greedy paths' frames
            "dev_empty_share": round(live.empty_share, 4),  # of the utterances: nothing but blanks
            "lr": self.optimizer.param_groups[0]["lr"],
            "frames_per_s": round(trained.frames / max(trained.seconds, 1e-9), 1),
            "elapsed_s": round(self.elapsed, 1),
        }
        figures = {"dev/distance": live.mean_distance, "dev/per": live.per}
        figures |= {"dev/blank_share": live.blank_share, "dev/empty_share": live.empty_share}
        if averaged is not None:
            row |= {
                "dev_distance_averaged": round(averaged.mean_distance, 4),
                "dev_per_averaged": round(averaged.per, 5),
            }
            figures |= {"dev/distance_averaged": averaged.mean_distance, "dev/per_averaged": averaged.per}
        self.history.append(row)
        log.info("epoch %d: %s", epoch, row)
        alarm = monitor.blank_alarm(self.history, self.config.time_stride)
        if alarm:
            log.warning("%s", alarm)
        figures |= {
            "train/epoch_loss": trained.mean_loss,
            "epoch/seconds": trained.seconds,
            "epoch/number": epoch,
        }
        self.accelerator.log(figures, step=self.step)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        write_error_lines(str(error).splitlines())
        return 2
    try:
        resume.check_timeout(args.timeout, config.io_deadline_s)
        for url in (args.data, args.out):  # credentials, bucket, endpoint: fail now, not after an epoch
            s3.check_access(url)
        trainer = Trainer(args, config)
        resume.check_shared(args.out, trainer.accelerator)
        found = resume.decide(args.out, args.resume, trainer.accelerator)
        if found:
            trainer.resume(found)
        trainer.run()
    except Preempted as preempted:
        waited = (
            time.monotonic() - trainer.preemption.signalled_at if trainer.preemption.signalled_at else 0.0
        )
        log.warning(
            "preempted: rank %d of %d: %s, %.1f s after the signal; exiting with %d",
            trainer.rank,
            trainer.world,
            preempted,
            waited,
            EXIT_PREEMPTED,
        )
        return EXIT_PREEMPTED
    except Exception as error:
        message = refusal(error, args)
        if message is None:
            raise
        write_error_lines([message])
        every_rank = isinstance(error, hardware.LauncherPrecision)  # raised on every rank alike
        if every_rank and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()  # all have written it before any leaves
        return 2
    return 0


def refusal(error: BaseException, args: argparse.Namespace) -> str | None:
    """The one line a user's mistake or an outage ends the run with; None for a bug (its traceback)."""
    return s3.refusal(error, [args.data, args.out])


def leave_at_once(status: int) -> NoReturn:
    """Exit with ``status`` without the interpreter's finalisation, once everything is written (the
    run's files by then, the log lines here). Every way out of a training process takes it:

    - gloo's worker threads (``pt_gloo_runloop``) outlive ``destroy_process_group``, since DDP's
      reducer keeps the group alive. One that is still releasing the last collective's tensors
      when finalisation begins needs the GIL for them, and a thread refused the GIL then is
      unwound through a noexcept destructor: ``terminate called without an active exception``,
      SIGABRT instead of the run's status (4 of 44 two-rank runs under load, from core dumps);
    - when one rank of a group exits, torchrun's agent sends SIGTERM to the others, and a rank
      still finalising by then (its signal handlers already reset) dies of it instead of exiting
      with its own status."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    leave_at_once(main())

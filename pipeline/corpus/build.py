"""Generates the corpus: plan each utterance from the seed, synthesise, featurise, write.

Every utterance slot (split, index) is planned from ``(seed, split, index, attempt)`` alone,
so the output does not depend on the worker count or on the order work is done in. A slot
whose synthesis fails (a synthesiser warning, no audio, an unmappable phone) is planned
again with the next attempt number, up to ``attempts`` times; every failure is counted in
``corpus.json``. A finished slot leaves ``.work/records/<split>/<id>.json`` (published after
its feature and transcript files), so an interrupted run redoes only unfinished slots.
"""

import io
import json
import logging
import multiprocessing
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.corpus import audio
from pipeline.corpus.text import FESTIVAL_LEXICON, lexicon_words, random_sentence
from pipeline.corpus.voices import (
    DEFAULT_VOICES,
    SAMPLE_RATE,
    Request,
    Spoken,
    SynthesisFailed,
    check_available,
    synthesise,
    voice_by_name,
)
from pipeline.validate import ctc_min_frames
from shards import kaggle
from shards.errors import UserError
from shards.frontend import FrontEnd, publish_front_end
from shards.progress import Progress
from shards.store import Store
from shards.vocab import parse_transcript, to_string

log = logging.getLogger("corpus")

SPLITS = ("train", "dev", "test")
LABELLED = ("train", "dev")
CHUNK = 24  # slots per worker task: one Festival process per voice per chunk
RECORDS = ".work/records"
BABBLE_TALKERS = 12  # sentences in the babble pool
FRONT_END = FrontEnd(sample_rate=SAMPLE_RATE)  # HW3P2's, at the rate the synthesisers speak


@dataclass(frozen=True)
class CorpusSettings:
    dst: str  # folder to write the HW3P2 layout to
    counts: tuple[int, int, int] = (3000, 300, 300)  # utterances for train, dev, test
    seed: int = 0
    workers: int = 1
    voices: tuple[str, ...] = DEFAULT_VOICES
    words: str = str(FESTIVAL_LEXICON)  # Festival lexicon (or a word-per-line file) sentences are drawn from
    sentence_words: tuple[int, int] = (10, 30)
    noise_share: float = 0.3  # fraction of utterances with white or babble noise
    snr_db: tuple[float, float] = (10.0, 30.0)
    stretch: tuple[float, float] = (0.85, 1.25)  # duration stretch per utterance
    speed: tuple[float, float] = (0.9, 1.1)  # speed perturbation, for voices without prosody controls
    attempts: int = 5  # syntheses tried per slot before it is given up


@dataclass(frozen=True)
class Plan:
    split: str
    index: int
    attempt: int
    voice: str
    text: str
    stretch: float
    f0: float
    speed: float
    noise: str | None  # None, "white" or "babble"
    snr_db: float
    noise_seed: int

    @property
    def id(self) -> str:
        return f"{self.split}-{self.index:06d}"


@dataclass
class Record:
    """What became of one slot; the JSON under .work/records."""

    id: str
    split: str
    plan: dict | None = None  # the plan that succeeded
    frames: int = 0
    seconds: float = 0.0
    phonemes: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # attempt, voice, kind, detail


def plan_slot(settings: CorpusSettings, words: list[str], split: str, index: int, attempt: int) -> Plan:
    rng = np.random.default_rng([settings.seed, SPLITS.index(split), index, attempt])
    voice = voice_by_name(settings.voices[int(rng.integers(len(settings.voices)))])
    text = random_sentence(rng, words, settings.sentence_words)
    # every draw is made whether or not it is used, so one setting never shifts the others
    stretch = rng.uniform(*settings.stretch)
    f0 = rng.uniform(*voice.f0_range)
    speed = rng.uniform(*settings.speed)
    noisy, white = rng.random(), rng.random()
    snr_db = rng.uniform(*settings.snr_db)
    noise_seed = rng.integers(2**31)
    return Plan(
        split=split,
        index=index,
        attempt=attempt,
        voice=voice.name,
        text=text,
        stretch=round(float(stretch), 4) if voice.prosody else 1.0,
        f0=round(float(f0), 1),
        speed=1.0 if voice.prosody else round(float(speed), 4),
        noise=None if noisy >= settings.noise_share else ("white" if white < 0.5 else "babble"),
        snr_db=round(float(snr_db), 2),
        noise_seed=int(noise_seed),
    )


# --- worker side -------------------------------------------------------------------------

_settings: CorpusSettings | None = None
_words: list[str] = []
_store: Store | None = None
_babble: list[np.ndarray] = []


def _init_worker(settings: CorpusSettings) -> None:
    global _settings, _words, _store, _babble
    _settings, _words, _store = settings, lexicon_words(Path(settings.words)), Store(settings.dst)
    _babble = _babble_pool(settings, _words)


def _babble_pool(settings: CorpusSettings, words: list[str]) -> list[np.ndarray]:
    """Talkers for babble noise: sentences of the corpus's own voices, fixed by the seed."""
    rng = np.random.default_rng([settings.seed, 99])
    by_voice: dict[str, list[Request]] = {}
    for i in range(BABBLE_TALKERS):
        voice = settings.voices[i % len(settings.voices)]
        f0 = rng.uniform(*voice_by_name(voice).f0_range)
        by_voice.setdefault(voice, []).append(
            Request(f"babble{i}", random_sentence(rng, words, (8, 12)), 1.0, f0)
        )
    pool = []
    with tempfile.TemporaryDirectory(prefix="corpus-babble-") as folder:
        for voice, requests in by_voice.items():
            results = synthesise(voice_by_name(voice), requests, Path(folder))
            pool += [results[r.key].audio for r in requests if isinstance(results[r.key], Spoken)]
    if not pool:
        raise UserError("no babble talker could be synthesised with the chosen voices")
    return pool


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _features(plan: Plan, spoken: Spoken) -> np.ndarray:
    samples = audio.change_speed(spoken.audio, plan.speed)
    if plan.noise is not None:
        rng = np.random.default_rng(plan.noise_seed)
        noise = (
            rng.normal(size=len(samples))
            if plan.noise == "white"
            else audio.babble(rng, _babble, len(samples))
        )
        samples = audio.add_noise(samples, noise, plan.snr_db)
    return FRONT_END.mfcc(samples)


def _finish(plan: Plan, spoken: Spoken, record: Record) -> None:
    """Write the slot's features (and transcript) and then its record."""
    features = _features(plan, spoken)
    labels = parse_transcript(spoken.phonemes, plan.id)
    if ctc_min_frames(labels) > len(features):
        raise SynthesisFailed(plan.id, "too fast", f"{len(features)} frames for {len(labels)} phonemes")
    if plan.split in LABELLED:
        transcript = np.array(["<sos>", *spoken.phonemes, "<eos>"])
        _store.publish_bytes(_npy_bytes(transcript), f"{plan.split}/transcript/{plan.id}.npy")
    _store.publish_bytes(_npy_bytes(features), f"{plan.split}/mfcc/{plan.id}.npy")
    record.plan = asdict(plan)
    record.frames = len(features)
    record.seconds = round(len(spoken.audio) / plan.speed / SAMPLE_RATE, 3)
    record.phonemes = spoken.phonemes


def _record_path(split: str, slot_id: str) -> str:
    return f"{RECORDS}/{split}/{slot_id}.json"


def _make_slots(job: tuple[str, list[int]]) -> list[Record]:
    split, indices = job
    records = {i: Record(f"{split}-{i:06d}", split) for i in indices}
    pending = {i: 0 for i in indices if not _store.exists(_record_path(split, records[i].id))}
    while pending:
        plans = [plan_slot(_settings, _words, split, i, attempt) for i, attempt in pending.items()]
        outcomes: dict[str, Spoken | SynthesisFailed] = {}
        with tempfile.TemporaryDirectory(prefix="corpus-") as folder:
            for voice in sorted({p.voice for p in plans}):
                requests = [Request(p.id, p.text, p.stretch, p.f0) for p in plans if p.voice == voice]
                outcomes |= synthesise(voice_by_name(voice), requests, Path(folder))
        for plan in plans:
            record = records[plan.index]
            try:
                outcome = outcomes[plan.id]
                if isinstance(outcome, SynthesisFailed):
                    raise outcome
                _finish(plan, outcome, record)
            except SynthesisFailed as failed:
                failure = {
                    "attempt": plan.attempt,
                    "voice": plan.voice,
                    "kind": failed.kind,
                    "detail": failed.detail,
                }
                record.failures.append(failure)
                pending[plan.index] += 1
                if pending[plan.index] < _settings.attempts:
                    continue
            del pending[plan.index]
            _store.publish_bytes(json.dumps(asdict(record)).encode(), _record_path(split, record.id))
    return [records[i] for i in indices]


# --- driver ------------------------------------------------------------------------------


def _load_record(store: Store, split: str, index: int) -> Record:
    return Record(**json.loads(store.read_bytes(_record_path(split, f"{split}-{index:06d}"))))


def _summary(settings: CorpusSettings, records: list[Record]) -> dict:
    kept = [r for r in records if r.plan is not None]
    failures = [f for r in records for f in r.failures]
    frames = sum(r.frames for r in kept)
    phonemes = sum(len(r.phonemes) for r in kept)
    by_voice = Counter(r.plan["voice"] for r in kept)
    return {
        "seed": settings.seed,
        "voices": list(settings.voices),
        "requested": dict(zip(SPLITS, settings.counts, strict=True)),
        "utterances": {split: sum(r.split == split for r in kept) for split in SPLITS},
        "hours": round(sum(r.seconds for r in kept) / 3600, 4),
        "hours_by_split": {s: round(sum(r.seconds for r in kept if r.split == s) / 3600, 4) for s in SPLITS},
        "utterances_by_voice": dict(sorted(by_voice.items())),
        "noisy_utterances": sum(r.plan["noise"] is not None for r in kept),
        "mean_frames_per_utterance": round(frames / max(len(kept), 1), 1),
        "mean_phonemes_per_utterance": round(phonemes / max(len(kept), 1), 1),
        "mean_frames_per_phoneme": round(frames / max(phonemes, 1), 2),
        "failed_attempts": len(failures),
        "failed_attempts_by_kind": dict(sorted(Counter(f["kind"] for f in failures).items())),
        "failed_attempts_by_voice": dict(sorted(Counter(f["voice"] for f in failures).items())),
        "dropped_slots": len(records) - len(kept),
        # where it was written and by how many workers do not change a byte
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("dst", "workers")},
    }


def _publish_test_files(store: Store, settings: CorpusSettings, records: list[Record]) -> None:
    test = [r for r in records if r.split == "test" and r.plan is not None]
    order = np.random.default_rng([settings.seed, 7]).permutation(len(test))
    ordered = [test[i] for i in order]
    store.publish_bytes(
        ("file\n" + "".join(f"{r.id}.npy\n" for r in ordered)).encode(), "test/test_order.csv"
    )
    labels = [to_string(parse_transcript(r.phonemes, r.id)) for r in ordered]
    store.publish_bytes(
        kaggle.labels_bytes(labels, "id,label"), "test_solution.csv"
    )  # Kaggle's positional ids


def generate(settings: CorpusSettings) -> dict:
    """Generate (or finish generating) the corpus; returns the corpus.json summary."""
    voices = [voice_by_name(name) for name in settings.voices]
    for voice in voices:
        check_available(voice)
    lexicon_words(Path(settings.words))  # fail here, not in every worker
    store = Store(settings.dst)
    store.clear_staging()
    jobs = [
        (split, list(range(start, min(start + CHUNK, count))))
        for split, count in zip(SPLITS, settings.counts, strict=True)
        for start in range(0, count, CHUNK)
    ]
    total = sum(settings.counts)
    with Progress(total, "synthesise", "utt", log=log) as bar:
        if settings.workers > 1:
            context = multiprocessing.get_context("spawn")
            with context.Pool(settings.workers, _init_worker, (settings,)) as pool:
                for done in pool.imap_unordered(_make_slots, jobs):
                    bar.update(len(done))
        else:
            _init_worker(settings)
            for job in jobs:
                bar.update(len(_make_slots(job)))
    records = [_load_record(store, split, i) for split, indices in jobs for i in indices]
    _publish_test_files(store, settings, records)
    summary = _summary(settings, records)
    publish_front_end(store, FRONT_END)  # what the pipeline carries into the dataset, training into the card
    store.publish_bytes((json.dumps(summary, indent=1) + "\n").encode(), "corpus.json")
    store.clear_staging()
    return summary

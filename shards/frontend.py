"""The front end: how MFCC features are made from audio, recorded so that it travels with the data.

One :class:`FrontEnd` computes the features (the demo corpus, ``eval transcribe`` on audio) and is
written as ``frontend.json`` beside what was computed with it: the corpus root, then the dataset
root (``python -m pipeline`` carries the source's), then the model card (training copies the
dataset's). Kaggle's HW3P2 files come without one: their front end is unknown (``None`` here).

    front_end = FrontEnd()                   # HW3P2's: 25 ms Hamming window, 10 ms hop, 40 mels, 13 cepstra
    features = front_end.mfcc(audio)         # (frames, 13) float32 of audio at front_end.sample_rate
    features = front_end.features_of_file("a.flac")   # any rate and channel count: mixed down, resampled
    publish_front_end(store, front_end); read_front_end(url)   # frontend.json: one writer, one reader

Two records describe the same features when every setting agrees (:meth:`FrontEnd.differences`);
the library's version is recorded but not compared (a patch release computes the same numbers).
librosa is imported where audio is handled, so reading a record costs nothing.
"""

import dataclasses
import json
from dataclasses import dataclass

import fsspec
import numpy as np

from shards.manifest import DatasetError
from shards.store import Store

FILE = "frontend.json"
LOGS = ("dB", "ln")  # 10·log10 of the mel power (librosa's power_to_db), or its natural log
UNCOMPARED = ("library_version",)


def _librosa_version() -> str:
    from importlib.metadata import version

    return version("librosa")


@dataclass(frozen=True)
class FrontEnd:
    """Every setting that changes the numbers (librosa's MFCC path, made explicit)."""

    library: str = "librosa"
    library_version: str = dataclasses.field(default_factory=_librosa_version)
    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms: ~100 frames a second
    window: str = "hamming"
    center: bool = True  # frames centred on t · hop (the signal padded with zeros)
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float = 8_000.0
    mel_scale: str = "slaney"  # librosa's default (htk=False); "htk" otherwise
    mel_norm: str = "slaney"  # area-normalised triangles
    power: float = 2.0
    log: str = "dB"  # one of LOGS
    top_db: float = 80.0  # dB only: the floor below the loudest bin
    n_mfcc: int = 13
    dct_type: int = 2
    dct_norm: str = "ortho"
    lifter: int = 0

    def __post_init__(self) -> None:
        if self.log not in LOGS:
            raise ValueError(f"front end: log {self.log!r}; allowed: {', '.join(LOGS)}")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"front end: mel_scale {self.mel_scale!r}; allowed: slaney, htk")

    @property
    def seconds_per_frame(self) -> float:
        return self.hop_length / self.sample_rate

    def mfcc(self, audio: np.ndarray) -> np.ndarray:
        """(frames, n_mfcc) float32 features of mono ``audio`` sampled at :attr:`sample_rate`."""
        import librosa

        mel = librosa.feature.melspectrogram(
            y=np.asarray(audio, dtype=np.float32),
            sr=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode="constant",
            power=self.power,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            htk=self.mel_scale == "htk",
            norm=self.mel_norm,
        )
        if self.log == "dB":
            log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=self.top_db)
        else:
            log_mel = np.log(np.maximum(mel, 1e-10))
        cepstra = librosa.feature.mfcc(
            S=log_mel, n_mfcc=self.n_mfcc, dct_type=self.dct_type, norm=self.dct_norm, lifter=self.lifter
        )
        return cepstra.T.astype(np.float32)

    def features_of_file(self, url: str) -> np.ndarray:
        """The features of an audio file (WAV, FLAC, ...: what libsndfile reads), any sample rate and
        channel count: channels averaged, resampled to :attr:`sample_rate`. OSError/ValueError if unreadable."""
        import librosa
        import soundfile

        with fsspec.open(url, "rb") as handle:
            try:
                audio, rate = soundfile.read(handle, dtype="float32", always_2d=True)
            except soundfile.LibsndfileError as error:
                raise ValueError(f"not audio libsndfile can read ({error.error_string})") from error
        if audio.shape[0] == 0:
            raise ValueError("the audio holds no samples")
        mono = audio.mean(axis=1)
        if rate != self.sample_rate:
            mono = librosa.resample(mono, orig_sr=rate, target_sr=self.sample_rate)
        return self.mfcc(mono)

    def differences(self, other: "FrontEnd") -> list[str]:
        """``setting: this → other`` for each setting that differs (the version is not compared)."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return [
            f"{key}: {mine[key]} → {theirs[key]}"
            for key in mine
            if key not in UNCOMPARED and mine[key] != theirs[key]
        ]

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "FrontEnd":
        try:
            document = json.loads(data)
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(document) - known)
            if unknown:
                raise ValueError(f"unknown settings {', '.join(unknown)}")
            for f in dataclasses.fields(cls):
                if f.name in document and not _of_type(document[f.name], f.type):
                    raise ValueError(f"{f.name}={document[f.name]!r}: expected {f.type.__name__}")
            return cls(**document)
        except (ValueError, TypeError) as error:
            raise DatasetError(f"{where}: not a front-end record ({error})") from error


def _of_type(value: object, kind: type) -> bool:
    """JSON's types as the record's: a bool is not a number, an integer is a float."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def publish_front_end(store: Store, front_end: FrontEnd) -> None:
    """Write ``frontend.json`` at a corpus or dataset root (atomically, as every file of a store)."""
    store.publish_bytes(front_end.to_json(), FILE)


def read_front_end(root: str) -> FrontEnd | None:
    """The ``frontend.json`` under a corpus or dataset root URL; None when it has none (unknown)."""
    url = f"{root.rstrip('/')}/{FILE}"
    try:
        with fsspec.open(url, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    return FrontEnd.from_json(data, url)


def recorded_front_end_of(file_url: str) -> tuple[str, FrontEnd] | None:
    """The record that covers a feature file, and where it is: the nearest ``frontend.json`` in its
    folder or the two above (HW3P2's ``ROOT/SPLIT/mfcc/NAME.npy``), never above the file system's
    root or the bucket; None when none records it."""
    fs, path = fsspec.core.url_to_fs(file_url)
    local = fsspec.core.split_protocol(file_url)[0] in (None, "file")
    for _ in range(3):
        parent = fs._parent(path)
        if not parent or parent == path:
            return None
        path = parent
        folder = path if local else fs.unstrip_protocol(path)
        front_end = read_front_end(folder)
        if front_end is not None:
            return f"{folder.rstrip('/')}/{FILE}", front_end
    return None


def describe(front_end: FrontEnd | None) -> str:
    """One phrase for logs and cards: the settings that matter, or "unknown"."""
    if front_end is None:
        return "unknown (no frontend.json)"
    return (
        f"{front_end.library} {front_end.library_version}: {front_end.sample_rate} Hz, {front_end.win_length}/"
        f"{front_end.hop_length} samples window/hop ({front_end.window}), {front_end.n_mels} {front_end.log} mel bands, "
        f"{front_end.n_mfcc} cepstra"
    )

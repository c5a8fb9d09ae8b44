"""What the demo corpus does to synthesised audio before the front end (shards/frontend.py): speed
perturbation and additive noise."""

import librosa
import numpy as np

from pipeline.corpus.voices import SAMPLE_RATE


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Tape-speed perturbation (Kaldi's): ``factor`` > 1 is faster and higher; labels stay valid."""
    if factor == 1.0:
        return audio
    return librosa.resample(audio, orig_sr=round(SAMPLE_RATE * factor), target_sr=SAMPLE_RATE).astype(
        np.float32
    )


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio`` plus ``noise`` (tiled or cut to length) scaled to the given signal-to-noise ratio."""
    noise = np.resize(noise, audio.shape).astype(np.float64)
    signal_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise**2)) or 1.0
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + scale * noise).astype(np.float32)


def babble(rng: np.random.Generator, pool: list[np.ndarray], length: int, talkers: int = 4) -> np.ndarray:
    """Several other utterances from ``pool``, each at a random offset, summed: crowd noise."""
    mix = np.zeros(length, dtype=np.float64)
    for i in rng.choice(len(pool), size=min(talkers, len(pool)), replace=False):
        source = np.resize(pool[i], length + len(pool[i]))
        start = int(rng.integers(0, len(pool[i])))
        mix += source[start : start + length]
    return mix

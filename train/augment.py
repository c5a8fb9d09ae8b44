"""On-the-fly augmentation of padded batches, training only, each part switchable by probability.

Masking is written here rather than taken from torchaudio (which does not install beside the
CPU torch here) and because it must respect each utterance's true length: a mask never starts
in, or reaches into, padding, and nothing touches padded frames.
"""

import torch
from torch import nn

from train.config import TrainConfig
from train.model import time_mask


class AddNoise(nn.Module):
    """Gaussian or Gumbel noise on a random subset (probability ``p``) of the utterances."""

    def __init__(self, p: float, std: float, kind: str = "gaussian"):
        super().__init__()
        self.p, self.std, self.kind = p, std, kind

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return features
        chosen = torch.rand(features.shape[0], device=features.device) < self.p
        if self.kind == "gaussian":
            noise = torch.randn_like(features) * self.std
        else:  # Gumbel(0, β) with β set so its standard deviation is ``std``, centred
            uniform = torch.rand_like(features).clamp_(1e-9, 1 - 1e-9)
            beta = self.std * 6**0.5 / torch.pi
            noise = -beta * torch.log(-torch.log(uniform)) - beta * 0.5772156649
        keep = chosen[:, None, None] & time_mask(lengths, features.shape[1])[:, :, None]
        return features + noise * keep


def _random_spans(count: int, max_width: int, extent: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) bool: per row, the union of ``count`` runs, each of a width drawn from
    [0, max_width] (at most the row's ``extent``), placed to end within the row's first ``extent``."""
    batch, device = extent.shape[0], extent.device
    positions = torch.arange(size, device=device)[None, :]
    spans = torch.zeros(batch, size, dtype=torch.bool, device=device)
    for _ in range(count):
        width = torch.minimum((torch.rand(batch, device=device) * (max_width + 1)).long(), extent)
        start = (torch.rand(batch, device=device) * (extent - width + 1)).long()
        spans |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return spans


class SpecMask(nn.Module):
    """Time and frequency masking (set to zero, the normalised mean) inside each true length."""

    def __init__(self, p: float, time_masks: int, time_max: int, freq_masks: int, freq_max: int):
        super().__init__()
        self.p, self.time_masks, self.time_max = p, time_masks, time_max
        self.freq_masks, self.freq_max = freq_masks, freq_max

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return features
        batch, frames, dim = features.shape
        device = features.device
        chosen = (torch.rand(batch, device=device) < self.p)[:, None, None]
        times = _random_spans(self.time_masks, self.time_max, lengths, frames)
        channels = _random_spans(self.freq_masks, self.freq_max, torch.full_like(lengths, dim), dim)
        real = time_mask(lengths, frames)[:, :, None]
        masked = (times[:, :, None] | (channels[:, None, :] & real)) & chosen
        return features.masked_fill(masked, 0.0)


def _dct_matrix(coefficients: int, bands: int) -> torch.Tensor:
    """(coefficients, bands) orthonormal DCT-II, the transform librosa's MFCC applies to log-mel."""
    k = torch.arange(coefficients, dtype=torch.float64)[:, None]
    n = torch.arange(bands, dtype=torch.float64)[None, :]
    matrix = torch.cos(torch.pi * k * (2 * n + 1) / (2 * bands)) * (2 / bands) ** 0.5
    matrix[0] /= 2**0.5
    return matrix


def _interpolate(x: torch.Tensor, position: torch.Tensor, last: torch.Tensor | int) -> torch.Tensor:
    """x (B, N, D) read along N at per-utterance fractional positions (B, M) in [0, last], by linear
    interpolation between neighbouring rows; ``last`` is the last row to read, (B, 1) or one int."""
    low = position.floor().long()
    high = (low + 1).clamp(max=last)
    weight = (position - low)[:, :, None]

    def rows(index: torch.Tensor) -> torch.Tensor:
        return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))

    return rows(low) * (1 - weight) + rows(high) * weight


class _LogMelDomain(nn.Module):
    """What the spectral augmentations share: the smooth log-mel spectrum behind normalised MFCCs
    (inverse DCT of the un-normalised cepstra, higher ones taken as zero) and the way back. The 13x40
    DCT has orthonormal rows, so the round trip is the identity. Needs the dataset's statistics."""

    def __init__(self, mean: list[float], std: list[float], bands: int):
        super().__init__()
        self.bands = bands
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("dct", _dct_matrix(len(mean), bands).float())

    def log_mel(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, coefficients) normalised cepstra → (B, T, bands) log-mel."""
        return (features * self.std + self.mean) @ self.dct

    def cepstra(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (log_mel @ self.dct.T - self.mean) / self.std


class FrequencyWarp(_LogMelDomain):
    """Vocal-tract-length perturbation on MFCCs: in the log-mel domain, the mel axis stretched by a
    random factor per utterance (probability ``p``), then back to cepstra."""

    def __init__(self, p: float, max_warp: float, mean: list[float], std: list[float], bands: int = 40):
        super().__init__(mean, std, bands)
        self.p, self.max_warp = p, max_warp

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.max_warp == 0:
            return features
        batch = features.shape[0]
        device = features.device
        chosen = torch.rand(batch, device=device) < self.p
        alpha = 1 + (torch.rand(batch, device=device) * 2 - 1) * self.max_warp
        log_mel = self.log_mel(features)
        # band k of the warped spectrum reads the original at k / alpha (linear interpolation)
        position = (torch.arange(self.bands, device=device)[None, :] / alpha[:, None]).clamp(
            0, self.bands - 1
        )
        warped = _interpolate(log_mel.transpose(1, 2), position, self.bands - 1).transpose(1, 2)
        cepstra = self.cepstra(warped)
        keep = (chosen[:, None] & time_mask(lengths, features.shape[1]))[:, :, None]
        return torch.where(keep, cepstra, features)


class MelBandMask(_LogMelDomain):
    """Frequency masking on the mel axis rather than on cepstral dimensions: for a random subset
    (probability ``p``) of the utterances, in the log-mel domain, ``masks`` runs of up to
    ``max_bands`` adjacent bands are each replaced by the band's own mean over the utterance (their
    movement over time is gone, the spectral envelope stays, so each utterance's mean cepstrum is
    unchanged), then back to cepstra."""

    def __init__(
        self, p: float, masks: int, max_bands: int, mean: list[float], std: list[float], bands: int = 40
    ):
        super().__init__(mean, std, bands)
        self.p, self.masks, self.max_bands = p, masks, max_bands

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.masks == 0 or self.max_bands == 0:
            return features
        batch, frames, _ = features.shape
        device = features.device
        real = time_mask(lengths, frames)[:, :, None]
        log_mel = self.log_mel(features)
        band_mean = (log_mel * real).sum(1, keepdim=True) / lengths[:, None, None]
        masked = _random_spans(self.masks, self.max_bands, torch.full_like(lengths, self.bands), self.bands)
        filled = torch.where(masked[:, None, :], band_mean, log_mel)
        cepstra = self.cepstra(filled)
        chosen = (torch.rand(batch, device=device) < self.p)[:, None, None]
        return torch.where(chosen & real, cepstra, features)


class TimeStretch(nn.Module):
    """Speed (tempo) perturbation of the frame sequence: a random subset (probability ``p``) of the
    utterances is resampled along time by a factor r in [1 - max_stretch, 1 + max_stretch] (r > 1
    speaks faster: round(length / r) frames), by linear interpolation between neighbouring frames.
    Returns the new batch and lengths; the batch is as wide as its longest new utterance, zero
    beyond each length. Utterances not chosen come back unchanged."""

    def __init__(self, p: float, max_stretch: float):
        super().__init__()
        self.p, self.max_stretch = p, max_stretch

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.p == 0 or self.max_stretch == 0:
            return features, lengths
        # factors and new lengths are drawn where the lengths are: on the host in training, so the
        # new batch width is known without waiting for the GPU
        batch, device, host = features.shape[0], features.device, lengths.device
        chosen = torch.rand(batch, device=host) < self.p
        factor = 1 + (torch.rand(batch, device=host) * 2 - 1) * self.max_stretch
        factor = torch.where(chosen, factor, torch.ones_like(factor))
        new_lengths = torch.clamp(torch.round(lengths / factor).long(), min=1)
        # frame t of the new sequence reads the old one at t * length / new_length
        steps = torch.arange(int(new_lengths.max()), device=device)[None, :]
        last = (lengths - 1).to(device, non_blocking=True)[:, None]
        ratio = (lengths / new_lengths).to(device, non_blocking=True)
        position = (steps * ratio[:, None]).clamp(max=last.float())
        stretched = _interpolate(features, position, last)
        mask = time_mask(new_lengths.to(device, non_blocking=True), stretched.shape[1])
        return stretched * mask[:, :, None], new_lengths


class Augment(nn.Module):
    """Time stretch, then frequency warp, mel-band masks, noise and masks; returns features and
    their lengths, the lengths where they were given (training gives the host copy: no GPU wait)."""

    def __init__(self, config: TrainConfig, stats: dict):
        super().__init__()
        self.stretch = TimeStretch(config.stretch_prob, config.stretch_max)
        self.warp = FrequencyWarp(config.warp_prob, config.warp_max, stats["mean"], stats["std"])
        self.mel_mask = MelBandMask(
            config.mask_prob, config.mel_masks, config.mel_mask_max, stats["mean"], stats["std"]
        )
        self.noise = AddNoise(config.noise_prob, config.noise_std, config.noise_kind)
        self.mask = SpecMask(
            config.mask_prob, config.time_masks, config.time_mask_max, config.freq_masks, config.freq_mask_max
        )

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, lengths = self.stretch(features, lengths)
        on_device = lengths.to(features.device, non_blocking=True)
        features = self.mel_mask(self.warp(features, on_device), on_device)
        features = self.mask(self.noise(features, on_device), on_device)
        return features, lengths

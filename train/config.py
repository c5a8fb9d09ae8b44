"""The training configuration: one typed dataclass, loaded from YAML, overridden by ``key=value``."""

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    # data
    max_frames: int = 40_000  # padded frames per batch (batch size x longest utterance)
    num_workers: int = 2  # loader processes per rank
    seed: int = 0  # plans, initialisation and augmentation
    # model
    channels: int = 256  # Conv1d embedding width
    conv_blocks: int = 2  # residual Conv1d blocks
    strides: list[int] = field(
        default_factory=lambda: [1, 2]
    )  # one per block; their product is the time stride (<= 4)
    utterance_norm: str = "none"  # none, mean (per-utterance CMN) or mean_var (CMVN), on top of the dataset's
    kernel_size: int = 3  # of every convolution
    conv_dropout: float = 0.1  # inside each residual block
    lstm_layers: int = 4  # bidirectional layers
    lstm_hidden: int = 256  # per direction
    lstm_dropout: float = 0.3  # locked (variational) dropout between LSTM layers
    classifier_hidden: int = 2048  # the MLP head's hidden width
    classifier_dropout: float = 0.3
    # augmentation (training only)
    noise_prob: float = 0.3  # share of utterances that get additive noise
    noise_kind: str = "gaussian"  # gaussian or gumbel
    noise_std: float = 0.1  # of the noise, in normalised feature units
    time_masks: int = 2  # time masks per utterance
    time_mask_max: int = 20  # longest time mask, frames
    freq_masks: int = 1  # frequency masks per utterance
    freq_mask_max: int = 3  # widest frequency mask, coefficients
    mask_prob: float = 0.5  # share of utterances that get masking (each kind drawn on its own)
    mel_masks: int = 0  # masks on the 40-band log-mel axis per utterance (band means kept)
    mel_mask_max: int = 8  # widest mel mask, bands
    warp_prob: float = 0.0  # share of utterances whose mel axis is warped (vocal-tract-length perturbation)
    warp_max: float = 0.1  # warp factors drawn from [1 - warp_max, 1 + warp_max]
    stretch_prob: float = 0.0  # share of utterances resampled in time (speed/tempo perturbation)
    stretch_max: float = 0.1  # speed factors drawn from [1 - stretch_max, 1 + stretch_max]
    # optimisation
    epochs: int = 60
    lr: float = 2e-3  # AdamW
    weight_decay: float = 1e-2
    grad_clip: float = 5.0  # max global gradient norm
    grad_accum: int = 1  # batches per optimiser step
    scheduler: str = "plateau"  # plateau (on dev distance) or cosine (with warm-up)
    warmup_steps: int = 500  # cosine only
    plateau_factor: float = 0.5
    plateau_patience: int = 2  # epochs without improvement before the rate drops
    bf16: bool = True  # train under bf16 autocast where native: GPU, CPU with AVX512-BF16/AMX
    lstm_impl: str = "auto"  # packed (cuDNN), padded (exact equivalent, fast on CPU) or auto
    # checkpoints
    keep_last: int = 3  # epoch checkpoints kept besides the best

    @property
    def time_stride(self) -> int:
        stride = 1
        for s in self.strides:
            stride *= s
        return stride

    def check(self) -> "TrainConfig":
        if len(self.strides) != self.conv_blocks or any(s not in (1, 2, 4) for s in self.strides):
            raise ValueError(f"strides {self.strides}: one per conv block, each 1, 2 or 4")
        if self.time_stride > 4:
            raise ValueError(f"strides {self.strides} give a time stride of {self.time_stride}; at most 4")
        if self.scheduler not in ("plateau", "cosine") or self.noise_kind not in ("gaussian", "gumbel"):
            raise ValueError(f"scheduler {self.scheduler!r} / noise_kind {self.noise_kind!r} not known")
        if self.utterance_norm not in ("none", "mean", "mean_var"):
            raise ValueError(f"utterance_norm {self.utterance_norm!r}: none, mean or mean_var")
        if self.lstm_impl not in ("auto", "packed", "padded"):
            raise ValueError(f"lstm_impl {self.lstm_impl!r}: auto, packed or padded")
        return self


def _convert(value: str, kind: type, key: str):
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{key}={value}: not a boolean")
        return value.lower() in ("true", "1", "yes")
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return [item(v) for v in value.strip("[]").split(",") if v.strip()]
    return kind(value)


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides; unknown keys are errors."""
    hints = typing.get_type_hints(TrainConfig)
    values: dict = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(values) - set(hints)
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key not in hints:
            raise ValueError(f"{override!r}: expected key=value with key one of {sorted(hints)}")
        values[key] = _convert(value, hints[key], key)
    config = TrainConfig(**values)
    for f in dataclasses.fields(config):  # YAML types must match too (e.g. no "1e-3" strings)
        value = getattr(config, f.name)
        expected = typing.get_origin(hints[f.name]) or hints[f.name]
        if expected is float and isinstance(value, int):
            setattr(config, f.name, float(value))
        elif not isinstance(value, expected):
            raise ValueError(f"{f.name}={value!r}: expected {hints[f.name]}")
    return config.check()

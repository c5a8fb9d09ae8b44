"""The training configuration: one typed dataclass, loaded from YAML, overridden by ``key=value``."""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shards.plan import DEFAULT_MAX_FRAMES
from shards.retry import IO_DEADLINE_S

PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # train/hardware.py says what each does on each device
DEVICES = ("auto", "cuda", "cpu")


@dataclass
class TrainConfig:
    # data
    max_frames: int = DEFAULT_MAX_FRAMES  # padded frames per batch (batch size x longest utterance)
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
    precision: str = "auto"  # auto, bf16, fp16 (CUDA, with a GradScaler) or fp32: train/hardware.py says what each layer runs in
    device: str = "auto"  # auto (CUDA when torch sees a GPU), cuda (refused without one) or cpu
    lstm_impl: str = "auto"  # packed (cuDNN), padded (exact equivalent, fast on CPU) or auto
    # checkpoints
    keep_last: int = 3  # epoch checkpoints kept besides the best
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N optimiser steps (0 = off)
    checkpoint_every_minutes: float = 10.0  # ... and every N minutes of training (0 = off)
    io_deadline_s: float = (
        IO_DEADLINE_S  # an unreachable object store is waited out this long (reads, writes)
    )
    # monitoring (train/monitor.py)
    report_to: str = (
        "auto"  # Accelerate trackers: auto (tensorboard if installed), none, tensorboard, wandb, mlflow, all
    )
    log_every_steps: int = 50  # optimiser steps between tracker records

    @property
    def time_stride(self) -> int:
        stride = 1
        for s in self.strides:
            stride *= s
        return stride

    def check(self) -> "TrainConfig":
        """The config itself, or a :class:`ConfigError` listing every problem, one line each."""
        problems = problems_of(dataclasses.asdict(self))
        if problems:
            raise ConfigError("\n".join(problems))
        return self


class ConfigError(ValueError):
    """Invalid settings; the message has one line per problem, naming the key, the value and what is allowed."""


# What each setting allows besides its type: (low, high, low inclusive, high inclusive) or choices.
# Every field has a rule (tested), so a new setting cannot skip validation.
def _at_least(low: float) -> tuple:
    return (low, math.inf, True, False)


_PROBABILITY = (0.0, 1.0, True, True)
_FRACTION = (0.0, 1.0, True, False)  # dropout rates and ±perturbation widths
RULES: dict[str, tuple] = {
    "max_frames": _at_least(1),
    "num_workers": _at_least(0),
    "seed": _at_least(0),
    "channels": _at_least(1),
    "conv_blocks": _at_least(1),
    "strides": ("each 1, 2 or 4", {1, 2, 4}),
    "utterance_norm": ("none", "mean", "mean_var"),
    "kernel_size": _at_least(1),
    "conv_dropout": _FRACTION,
    "lstm_layers": _at_least(1),
    "lstm_hidden": _at_least(1),
    "lstm_dropout": _FRACTION,
    "classifier_hidden": _at_least(1),
    "classifier_dropout": _FRACTION,
    "noise_prob": _PROBABILITY,
    "noise_kind": ("gaussian", "gumbel"),
    "noise_std": _at_least(0),
    "time_masks": _at_least(0),
    "time_mask_max": _at_least(0),
    "freq_masks": _at_least(0),
    "freq_mask_max": _at_least(0),
    "mask_prob": _PROBABILITY,
    "mel_masks": _at_least(0),
    "mel_mask_max": (0, 40, True, True),  # bands of the 40-band log-mel
    "warp_prob": _PROBABILITY,
    "warp_max": _FRACTION,
    "stretch_prob": _PROBABILITY,
    "stretch_max": _FRACTION,
    "epochs": _at_least(1),
    "lr": (0.0, math.inf, False, False),
    "weight_decay": _at_least(0),
    "grad_clip": (0.0, math.inf, False, False),
    "grad_accum": _at_least(1),
    "scheduler": ("plateau", "cosine"),
    "warmup_steps": _at_least(0),
    "plateau_factor": (0.0, 1.0, False, False),
    "plateau_patience": _at_least(0),
    "precision": PRECISIONS,
    "device": DEVICES,
    "lstm_impl": ("auto", "packed", "padded"),
    "keep_last": _at_least(1),
    "checkpoint_every_steps": _at_least(0),
    "checkpoint_every_minutes": _at_least(0),
    "io_deadline_s": (0.0, math.inf, False, False),
    "report_to": ("auto", "none", "tensorboard", "wandb", "mlflow", "all"),
    "log_every_steps": _at_least(1),
}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_problem(value, hint) -> str | None:
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or any(_type_problem(v, int) for v in value):
            return "expected a list of integers"
        return None
    if hint is float:  # an integer is a number too, a boolean is not
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "expected a finite number"
    if hint is int and isinstance(value, bool):
        return "expected an integer, not true/false"
    return None if isinstance(value, hint) else f"expected {_TYPE_NAMES[hint]}"


def _range_problem(value, rule: tuple) -> str | None:
    if not rule:
        return None
    if isinstance(rule[1], set):
        return None if set(value) <= rule[1] else rule[0]
    if isinstance(rule[0], str):
        return None if value in rule else "allowed: " + ", ".join(rule)
    low, high, low_in, high_in = rule
    if (value > low or (low_in and value == low)) and (value < high or (high_in and value == high)):
        return None
    low_text = f"{'≥' if low_in else '>'} {low:g}"
    return (
        f"allowed: {low_text}"
        if high == math.inf
        else f"allowed: {low_text} and {'≤' if high_in else '<'} {high:g}"
    )


def problems_of(values: dict) -> list[str]:
    """Every problem of a settings mapping, one line each: the key, the value, what is allowed."""
    hints = typing.get_type_hints(TrainConfig)
    problems = [
        f"{key}: unknown setting (known: {', '.join(sorted(hints))})" for key in values if key not in hints
    ]
    for key, hint in hints.items():
        if key not in values:
            continue
        value = values[key]
        problem = _type_problem(value, hint) or _range_problem(value, RULES[key])
        if problem:
            problems.append(f"{key}={value!r}: {problem}")
    strides = values.get("strides", TrainConfig().strides)
    blocks = values.get("conv_blocks", TrainConfig.conv_blocks)
    if not any(p.startswith(("strides", "conv_blocks")) for p in problems):
        if len(strides) != blocks:
            problems.append(f"strides={strides!r}: one per conv block (conv_blocks={blocks})")
        elif math.prod(strides) > 4:
            problems.append(f"strides={strides!r}: time stride {math.prod(strides)}; allowed: at most 4")
    return problems


def _convert(value: str, hint: type):
    """A ``key=value`` string as the setting's type; a string that does not convert is left for the check."""
    if typing.get_origin(hint) is list:
        parts = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
        return [int(v) if v.lstrip("-").isdigit() else v for v in parts]
    if hint is bool:
        return {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}.get(
            value.lower(), value
        )
    try:
        return hint(value)
    except ValueError:
        return value


def _read_yaml(path: str | Path) -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text())  # safe: no tag builds Python objects
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not a valid settings file{line}: {problem}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings (key: value), found {type(values).__name__}"
        )
    return values


# Settings of earlier versions, as today's: bf16 true/false was "bf16 where native" / float32.
RENAMED = {"bf16": ("precision", {True: "auto", False: "fp32"})}


def upgraded(values: dict) -> dict:
    """A settings mapping (a YAML file's, a checkpoint's) with earlier versions' settings as today's."""
    values = dict(values)
    for old, (new, meaning) in RENAMED.items():
        if old in values and new not in values and values[old] in meaning:
            values[new] = meaning[values.pop(old)]
    return values


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides, validated as a whole."""
    hints = typing.get_type_hints(TrainConfig)
    values = upgraded(_read_yaml(path)) if path is not None else {}
    problems = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            problems.append(f"{override!r}: expected key=value")
        elif key in RENAMED:
            new, meaning = RENAMED[key]
            converted = _convert(value, bool)
            if converted in meaning:
                values[new] = meaning[converted]
            else:
                problems.append(
                    f"{key}={value!r}: expected true or false (now {new}: {', '.join(RULES[new])})"
                )
        elif key not in hints:
            problems.append(f"{key}: unknown setting (known: {', '.join(sorted(hints))})")
        else:
            values[key] = _convert(value, hints[key])
    problems += problems_of(values)
    if problems:
        raise ConfigError("\n".join(problems))
    floats = {k: float(v) for k, v in values.items() if hints[k] is float}  # YAML's 1 for a float setting
    return TrainConfig(**(values | floats))

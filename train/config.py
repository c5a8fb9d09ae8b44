"""The training configuration: one typed dataclass, loaded from YAML, overridden by ``key=value``."""

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml

from shards.errors import UserError
from shards.plan import DEFAULT_MAX_FRAMES
from shards.retry import IO_DEADLINE_S


@dataclass(frozen=True)
class Range:
    """What a number setting allows besides its type: from ``low`` to ``high``, each end in or out."""

    low: float
    high: float = math.inf
    low_inclusive: bool = True
    high_inclusive: bool = False

    def problem(self, value: float) -> str | None:
        above = value > self.low or (self.low_inclusive and value == self.low)
        below = value < self.high or (self.high_inclusive and value == self.high)
        if above and below:
            return None
        low = f"{'≥' if self.low_inclusive else '>'} {self.low:g}"
        if self.high == math.inf:
            return f"allowed: {low}"
        return f"allowed: {low} and {'≤' if self.high_inclusive else '<'} {self.high:g}"


@dataclass(frozen=True)
class Pattern:
    """What a free-text setting allows: text matching ``regex``, described in words."""

    regex: str
    described: str

    def problem(self, value: str) -> str | None:
        return None if re.fullmatch(self.regex, value) else f"allowed: {self.described}"


# Each setting's rule is on its field: a number's Range in Annotated, a string's choices as a Literal
# or its Pattern in Annotated, true/false by type alone (tested: no field without one, so a new setting cannot skip validation).
Count = Annotated[int, Range(1)]  # something there must be at least one of
Amount = Annotated[int, Range(0)]  # zero allowed (zero masks, zero workers)
Positive = Annotated[float, Range(0, low_inclusive=False)]
NonNegative = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1, high_inclusive=True)]
Fraction = Annotated[float, Range(0, 1)]  # dropout rates and ±perturbation widths
Precision = Literal["auto", "bf16", "fp16", "fp32"]  # train/hardware.py says what each does on each device
Device = Literal["auto", "cuda", "cpu"]


@dataclass
class TrainConfig:
    # data
    max_frames: Count = DEFAULT_MAX_FRAMES  # padded frames per batch (batch size x longest utterance)
    num_workers: Amount = 2  # loader processes per rank
    seed: Amount = 0  # plans, initialisation and augmentation
    # the train split's source folders to train on, comma-separated (train-clean-100,train-clean-360:
    # the manifest's source column); empty: all of them
    train_sources: Annotated[str, Pattern(r"([\w.-]+(,[\w.-]+)*)?", "folder names, comma-separated")] = ""
    # model
    channels: Count = 256  # Conv1d embedding width
    conv_blocks: Count = 2  # residual Conv1d blocks
    strides: list[Literal[1, 2, 4]] = field(default_factory=lambda: [1, 2])  # one per block, product <= 4
    utterance_norm: Literal["none", "mean", "mean_var"] = (
        "none"  # per-utterance CMN or CMVN, on top of the dataset's
    )
    kernel_size: Count = 3  # of every convolution
    conv_dropout: Fraction = 0.1  # inside each residual block
    lstm_layers: Count = 4  # bidirectional layers
    lstm_hidden: Count = 256  # per direction
    lstm_dropout: Fraction = 0.3  # locked (variational) dropout between LSTM layers
    classifier_hidden: Count = 2048  # the MLP head's hidden width
    classifier_dropout: Fraction = 0.3
    # augmentation (training only)
    noise_prob: Probability = 0.3  # share of utterances that get additive noise
    noise_kind: Literal["gaussian", "gumbel"] = "gaussian"
    noise_std: NonNegative = 0.1  # of the noise, in normalised feature units
    time_masks: Amount = 2  # time masks per utterance
    time_mask_max: Amount = 20  # longest time mask, frames
    freq_masks: Amount = 1  # frequency masks per utterance
    freq_mask_max: Amount = 3  # widest frequency mask, coefficients
    mask_prob: Probability = 0.5  # share of utterances that get masking (each kind drawn on its own)
    mel_masks: Amount = 0  # masks on the 40-band log-mel axis per utterance (band means kept)
    mel_mask_max: Annotated[int, Range(0, 40, high_inclusive=True)] = 8  # widest mel mask, of 40 bands
    warp_prob: Probability = (
        0.0  # share of utterances whose mel axis is warped (vocal-tract-length perturbation)
    )
    warp_max: Fraction = 0.1  # warp factors drawn from [1 - warp_max, 1 + warp_max]
    stretch_prob: Probability = 0.0  # share of utterances resampled in time (speed/tempo perturbation)
    stretch_max: Fraction = 0.1  # speed factors drawn from [1 - stretch_max, 1 + stretch_max]
    # optimisation
    epochs: Count = 60
    lr: Positive = 2e-3  # AdamW
    weight_decay: NonNegative = 1e-2
    grad_clip: Positive = 5.0  # max global gradient norm
    grad_accum: Count = 1  # batches per optimiser step
    scheduler: Literal["plateau", "cosine"] = "plateau"  # on dev distance, or cosine with warm-up
    warmup_steps: Amount = 500  # cosine only
    plateau_factor: Annotated[float, Range(0, 1, low_inclusive=False)] = 0.5
    plateau_patience: Amount = 2  # epochs without improvement before the rate drops
    precision: Precision = "auto"  # fp16 is CUDA's, with a GradScaler
    device: Device = "auto"  # auto: CUDA when torch sees a GPU; cuda is refused without one
    lstm_impl: Literal["auto", "packed", "padded"] = "auto"  # packed (cuDNN), padded (exact, fast on CPU)
    # weight averaging (train/average.py): scored beside the live weights, saved in model.pt
    average: Literal["none", "ema", "cumulative"] = "none"
    average_decay: Annotated[float, Range(0, 1, low_inclusive=False)] = 0.999  # ema's, after its warm-up
    average_every: Count = 1  # optimiser steps between updates of the average
    # checkpoints
    keep_last: Count = 3  # epoch checkpoints kept besides the best
    checkpoint_every_steps: Amount = 0  # also checkpoint mid-epoch every N optimiser steps (0 = off)
    checkpoint_every_minutes: NonNegative = 10.0  # ... and every N minutes of training (0 = off)
    io_deadline_s: Positive = IO_DEADLINE_S  # an unreachable object store is waited out this long
    # monitoring (train/monitor.py): Accelerate trackers, auto = tensorboard if installed
    report_to: Literal["auto", "none", "tensorboard", "wandb", "mlflow", "all"] = "auto"
    log_every_steps: Count = 50  # optimiser steps between tracker records

    @property
    def train_source_folders(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.train_sources.split(",") if name.strip())

    @property
    def time_stride(self) -> int:
        """Input frames per output frame: the product of the convolution strides."""
        return math.prod(self.strides)

    def check(self) -> "TrainConfig":
        """The config itself, or a :class:`ConfigError` listing every problem, one line each."""
        problems = problems_of(dataclasses.asdict(self))
        if problems:
            raise ConfigError("\n".join(problems))
        return self


class ConfigError(UserError, ValueError):
    """Invalid settings; the message has one line per problem, naming the key, the value and what is allowed."""


_HINTS = typing.get_type_hints(TrainConfig, include_extras=True)
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def setting_rule(name: str) -> tuple[type, Range | Pattern | tuple | None]:
    """A setting's type and what it allows besides: a :class:`Range`, a tuple of choices (a list
    setting's are its items'), or None where the type says it all (true/false)."""
    hint = _HINTS[name]
    if typing.get_origin(hint) is Annotated:
        base, allowed = typing.get_args(hint)[:2]
        return base, allowed
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    if typing.get_origin(hint) is list:
        return list, typing.get_args(typing.get_args(hint)[0])
    return hint, None


def _type_problem(value, kind: type) -> str | None:
    if kind is list:
        if not isinstance(value, list) or any(_type_problem(v, int) for v in value):
            return "expected a list of integers"
        return None
    if kind is float:  # an integer is a number too, a boolean is not
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "expected a finite number"
    if kind is int and isinstance(value, bool):
        return "expected an integer, not true/false"
    return None if isinstance(value, kind) else f"expected {_TYPE_NAMES[kind]}"


def _allowed_problem(value, allowed: Range | Pattern | tuple | None) -> str | None:
    if allowed is None:
        return None
    if isinstance(allowed, Range | Pattern):
        return allowed.problem(value)
    if isinstance(value, list):
        *others, last = map(str, allowed)
        return None if set(value) <= set(allowed) else f"each {', '.join(others)} or {last}"
    return None if value in allowed else "allowed: " + ", ".join(map(str, allowed))


def problems_of(values: dict) -> list[str]:
    """Every problem of a settings mapping, one line each: the key, the value, what is allowed."""
    problems = [
        f"{key}: unknown setting (known: {', '.join(sorted(_HINTS))})" for key in values if key not in _HINTS
    ]
    for key in _HINTS:
        if key not in values:
            continue
        kind, allowed = setting_rule(key)
        problem = _type_problem(values[key], kind) or _allowed_problem(values[key], allowed)
        if problem:
            problems.append(f"{key}={values[key]!r}: {problem}")
    strides = values.get("strides", TrainConfig().strides)
    blocks = values.get("conv_blocks", TrainConfig.conv_blocks)
    if not any(p.startswith(("strides", "conv_blocks")) for p in problems):
        if len(strides) != blocks:
            problems.append(f"strides={strides!r}: one per conv block (conv_blocks={blocks})")
        elif math.prod(strides) > 4:
            problems.append(f"strides={strides!r}: time stride {math.prod(strides)}; allowed: at most 4")
    return problems


def _convert(value: str, kind: type):
    """A ``key=value`` string as the setting's type; a string that does not convert is left for the check."""
    if kind is list:
        parts = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
        return [int(v) if v.lstrip("-").isdigit() else v for v in parts]
    if kind is bool:
        return {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}.get(
            value.lower(), value
        )
    try:
        return kind(value)
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
                    f"{key}={value!r}: expected true or false (now {new}: {', '.join(setting_rule(new)[1])})"
                )
        elif key not in _HINTS:
            problems.append(f"{key}: unknown setting (known: {', '.join(sorted(_HINTS))})")
        else:
            values[key] = _convert(value, setting_rule(key)[0])
    problems += problems_of(values)
    if problems:
        raise ConfigError("\n".join(problems))
    floats = {
        k: float(v) for k, v in values.items() if setting_rule(k)[0] is float
    }  # YAML's 1 for a float setting
    return TrainConfig(**(values | floats))

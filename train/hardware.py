"""Where a run computes and in what precision: the device choice, the precision each layer runs in,
and the start-up line that says both.

Precision per setting (``precision`` in TrainConfig; the forward only: validation and evaluation
run in float32, and the CTC loss always gets float32 log-probabilities):

    fp32  every layer float32 (on CUDA GPUs with compute capability >= 8.0, matmuls and cuDNN in TF32)
    bf16  convolutions and classifier under bfloat16 autocast; the BiLSTM in bfloat16 on CPUs (oneDNN),
          in float32/TF32 on CUDA, because cuDNN's RNN autocast casts to float16 whatever dtype autocast
          was given (lstm_outside_autocast; train/model.py applies it)
    fp16  CUDA only: every layer under float16 autocast, the BiLSTM included, with a GradScaler
    auto  bf16 where the device computes it natively (CUDA capability >= 8.0; CPUs with AVX512-BF16
          or AMX), fp16 on older CUDA GPUs (T4, V100), fp32 elsewhere
"""

import torch

from shards.errors import UserError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(UserError, RuntimeError):
    """A device or precision this machine cannot give; the message says what is missing."""


def use_cuda(choice: str) -> bool:
    """Whether the run goes on CUDA GPUs: ``auto`` when torch sees one, ``cuda`` or refusal."""
    if choice == "cuda" and not torch.cuda.is_available():
        built = f"torch {torch.__version__}" + (
            f", built for CUDA {torch.version.cuda}" if torch.version.cuda else ", a CPU build"
        )
        raise DeviceError(
            f"device=cuda: no CUDA GPU is visible ({built}; torch.cuda.is_available() is False: check "
            "nvidia-smi, the driver's CUDA version and CUDA_VISIBLE_DEVICES), or run with device=auto/cpu"
        )
    return choice != "cpu" and torch.cuda.is_available()


def _ampere_or_newer(device: torch.device) -> bool:
    """CUDA compute capability 8.0 or newer: native bf16 and TF32."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def native_bf16(device: torch.device) -> bool:
    """True on CUDA GPUs of compute capability 8.0 or newer and on CPUs with AVX512-BF16 or AMX;
    False where bf16 would only be emulated (T4, V100: ``torch.cuda.is_bf16_supported()`` says True
    there, counting emulation)."""
    if device.type == "cuda":
        return _ampere_or_newer(device)
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            getattr(cpu, name, lambda: False)()
            for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


def resolve_precision(choice: str, device: torch.device) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for ``choice`` on ``device`` (see the module's table)."""
    if choice == "fp16" and device.type != "cuda":
        raise DeviceError(
            f"precision=fp16 needs a CUDA GPU (this run is on {device.type}); use auto, bf16 or fp32"
        )
    if choice != "auto":
        return choice
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


class LauncherPrecision(DeviceError):
    """The launcher asked for a precision of its own; raised alike on every rank it started."""


def refuse_launcher_precision(mixed_precision: str) -> None:
    """The run's ``precision`` is the one authority: ``accelerate launch --mixed_precision fp16|bf16``
    (or ``mixed_precision`` in its config file) would wrap the model's forward in Accelerate's own
    autocast and scaler, inside this run's, so that the LSTM rule above no longer holds (under a bf16
    setting it would run in cuDNN float16) and the start-up line would name the wrong precision."""
    if mixed_precision != "no":
        raise LauncherPrecision(
            f"accelerate launch was given mixed_precision {mixed_precision} (--mixed_precision or its "
            "config file): this run's precision setting is the only one; launch with --mixed_precision no "
            f"and set precision=auto|bf16|fp16|fp32 instead"
        )


def check_lstm_path(lstm_impl: str, device: torch.device) -> None:
    """``lstm_impl=padded`` runs each direction on weights borrowed from the fused module, which on
    a GPU are not one contiguous cuDNN buffer: cuDNN would copy them, and warn, at every call. The
    packed path is the GPU's (``auto`` picks it there); padded is the CPU's."""
    if lstm_impl == "padded" and device.type == "cuda":
        raise DeviceError(
            "lstm_impl=padded on a GPU: cuDNN would copy its borrowed weights at every call; "
            "use lstm_impl=auto or packed there (padded is the CPU path)"
        )


def allow_tf32(device: torch.device) -> None:
    """float32 matmuls and cuDNN convolutions/RNNs in TF32 on GPUs that have it (no effect elsewhere)."""
    if _ampere_or_newer(device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def lstm_outside_autocast(device_type: str, autocast_dtype: torch.dtype | None) -> bool:
    """Whether the BiLSTM must leave the caller's autocast and run in float32: under a bfloat16
    autocast on CUDA, cuDNN's RNN autocast (aten/src/ATen/cudnn/AutocastRNN.cpp) casts input, states
    and weights to float16 whatever dtype was asked, so a bf16 run would train its LSTMs in float16
    without loss scaling. CPU autocast runs them in bfloat16 as asked (oneDNN), fp16 as asked."""
    return device_type == "cuda" and autocast_dtype == torch.bfloat16


def lstm_dtype(precision: str, device: torch.device) -> torch.dtype:
    """What the BiLSTM computes in for a resolved precision on ``device`` (the rule above)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.float32 if dtype is None or lstm_outside_autocast(device.type, dtype) else dtype


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The training forward's autocast context for a resolved precision (disabled for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device.type, dtype, enabled=precision in AUTOCAST_DTYPES)


def describe(device: torch.device, backend: str, world_size: int, precision: str) -> str:
    """The start-up line: device, compute capability, backend, world size and precision."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = f"{torch.cuda.get_device_name(device)} ({device}, compute capability {major}.{minor})"
    else:
        where = "CPU" + (
            " with native bf16 (AVX512-BF16/AMX)" if native_bf16(device) else " without native bf16"
        )
    lstm = str(lstm_dtype(precision, device)).removeprefix("torch.")
    return (
        f"device {where}, backend {backend}, world size {world_size}, precision {precision} "
        f"(BiLSTM in {lstm}{', GradScaler' if precision == 'fp16' else ''})"
    )

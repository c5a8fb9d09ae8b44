"""precision=auto as train/hardware.py's table promises: bf16 where the device computes it natively,
fp16 with a GradScaler on older GPUs, fp32 elsewhere, and a start-up line that says which.

No GPU is needed: torch.cuda's and torch.cpu's own answers (is a GPU there, its compute capability,
does this CPU have AVX512-BF16 or AMX) are set by the test, and the code under test asks only those.
The settings come through load_config, as a run's do (strings made at run time, not literals).
"""

import pytest
import torch

from train.config import load_config
from train.hardware import (
    DeviceError,
    LauncherPrecision,
    allow_tf32,
    check_lstm_path,
    describe,
    native_bf16,
    refuse_launcher_precision,
    resolve_precision,
    use_cuda,
)


def _precision(name: str) -> str:
    return load_config(None, [f"precision={name}"]).precision


def _device(name: str) -> str:
    return load_config(None, [f"device={name}"]).device


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device of the given compute capability, as torch.cuda describes it."""

    def of_capability(major: int, minor: int) -> torch.device:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in GPU")
        return torch.device("cuda", 0)

    return of_capability


@pytest.fixture
def cpu(monkeypatch):
    """The CPU device, with or without the instructions that compute bf16 natively."""

    def with_features(avx512_bf16: bool, amx: bool) -> torch.device:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        return torch.device("cpu")

    return with_features


@pytest.mark.parametrize(
    ("capability", "precision", "lstm"),
    [
        ((6, 1), "fp16", "float16, GradScaler"),  # Pascal
        ((7, 0), "fp16", "float16, GradScaler"),  # V100
        ((7, 5), "fp16", "float16, GradScaler"),  # T4: bf16 there would only be emulated
        ((8, 0), "bf16", "float32"),  # A100: the BiLSTM leaves cuDNN's float16 RNN autocast
        ((9, 0), "bf16", "float32"),  # H100
    ],
)
def test_auto_on_a_gpu_is_bf16_from_compute_capability_8_and_fp16_before(gpu, capability, precision, lstm):
    device = gpu(*capability)
    assert resolve_precision(_precision("auto"), device) == precision
    line = describe(device, "nccl", 8, _precision(precision))
    major, minor = capability
    assert line == (
        f"device Stand-in GPU (cuda:0, compute capability {major}.{minor}), backend nccl, world size 8, "
        f"precision {precision} (BiLSTM in {lstm})"
    )


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "precision"),
    [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16")],
)
def test_auto_on_a_cpu_is_bf16_only_with_avx512_bf16_or_amx(cpu, avx512_bf16, amx, precision):
    device = cpu(avx512_bf16, amx)
    assert resolve_precision(_precision("auto"), device) == precision
    native = "with native bf16 (AVX512-BF16/AMX)" if precision == "bf16" else "without native bf16"
    lstm = {"bf16": "bfloat16", "fp32": "float32"}[precision]
    assert describe(device, "gloo", 2, _precision(precision)) == (
        f"device CPU {native}, backend gloo, world size 2, precision {precision} (BiLSTM in {lstm})"
    )


def test_a_precision_asked_for_by_name_is_kept_and_fp16_off_cuda_refused(gpu, cpu):
    plain_cpu = cpu(False, False)
    assert [resolve_precision(_precision(p), plain_cpu) for p in ("bf16", "fp32")] == ["bf16", "fp32"]
    with pytest.raises(DeviceError, match=r"precision=fp16 needs a CUDA GPU \(this run is on cpu\)"):
        resolve_precision(_precision("fp16"), plain_cpu)
    old_gpu = gpu(7, 5)
    named = [resolve_precision(_precision(p), old_gpu) for p in ("bf16", "fp16", "fp32")]
    assert named == ["bf16", "fp16", "fp32"]


def test_a_torch_without_the_cpu_probes_counts_as_no_native_bf16(monkeypatch):
    # an older torch has no torch.cpu._is_amx_tile_supported and friends: not native, not an error
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not native_bf16(torch.device("cpu"))
    assert resolve_precision(_precision("auto"), torch.device("cpu")) == "fp32"


def test_a_device_neither_cuda_nor_cpu_never_counts_as_native_bf16(cpu):
    cpu(True, True)  # whatever the CPU beside it can do
    assert not native_bf16(torch.device("meta"))


def test_the_device_choice_never_falls_back_to_the_cpu_silently(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert use_cuda(_device("auto")) is False and use_cuda(_device("cpu")) is False
    for build, words in ((None, "a CPU build"), ("12.6", "built for CUDA 12.6")):
        monkeypatch.setattr(torch.version, "cuda", build)
        with pytest.raises(
            DeviceError, match=rf"device=cuda: no CUDA GPU is visible \(torch .*, {words};.*nvidia-smi"
        ):
            use_cuda(_device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert use_cuda(_device("auto")) is True and use_cuda(_device("cuda")) is True
    assert use_cuda(_device("cpu")) is False


def test_tf32_is_allowed_from_compute_capability_8_only(gpu):
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [flag.allow_tf32 for flag in flags]
    try:
        for flag in flags:
            flag.allow_tf32 = False
        allow_tf32(torch.device("cpu"))
        allow_tf32(gpu(7, 5))
        assert [flag.allow_tf32 for flag in flags] == [False, False]
        allow_tf32(gpu(8, 0))
        assert [flag.allow_tf32 for flag in flags] == [True, True]
    finally:
        for flag, value in zip(flags, before, strict=True):
            flag.allow_tf32 = value


@pytest.mark.parametrize("impl", ["auto", "packed", "padded"])
def test_the_padded_lstm_path_is_refused_on_a_gpu_only(gpu, impl):
    """On a GPU the padded path's borrowed weights are no cuDNN buffer: copied and warned about at
    every call. Refused there, in one line naming the way out; every path runs on a CPU."""
    setting = load_config(None, [f"lstm_impl={impl}"]).lstm_impl
    check_lstm_path(setting, torch.device("cpu"))
    device = gpu(8, 0)
    if impl != "padded":
        check_lstm_path(setting, device)
        return
    with pytest.raises(
        DeviceError, match=r"^lstm_impl=padded on a GPU: .* use lstm_impl=auto or packed there"
    ):
        check_lstm_path(setting, device)


@pytest.mark.parametrize("launcher", ["no", "fp16", "bf16", "fp8"])
def test_a_precision_from_the_launcher_is_refused_naming_the_one_authority(launcher):
    """accelerate launch's own mixed precision would autocast inside the run's: only "no" passes.
    (The whole command, two ranks each printing the line, is test_train.py's.)"""
    launcher = launcher.encode().decode()  # made at run time, as Accelerate's environment gives it
    if launcher == "no":
        refuse_launcher_precision(launcher)
        return
    with pytest.raises(LauncherPrecision) as refused:
        refuse_launcher_precision(launcher)
    assert str(refused.value).startswith(f"accelerate launch was given mixed_precision {launcher} (")
    assert "launch with --mixed_precision no and set precision=auto|bf16|fp16|fp32" in str(refused.value)

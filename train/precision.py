"""Which precision a device trains in: bfloat16 autocast where the hardware computes in it natively."""

import torch


def native_bf16(device: torch.device) -> bool:
    """True on CUDA GPUs with bf16 and on CPUs with AVX512-BF16 or AMX, where oneDNN's bf16 LSTM
    and matmuls run ~2x faster than float32; False where bf16 would only be emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(
            getattr(cpu, name, lambda: False)()
            for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False

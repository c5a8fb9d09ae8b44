"""Counting, on a CPU, the places where a training step would wait for a GPU.

On a GPU the host queues work and runs ahead; it waits (a synchronisation) whenever it needs a
result the GPU computes: a value read on the host (``.item()``, ``bool()``, ``.tolist()``, a
data-dependent shape such as ``nonzero``), a copy to the host, or a blocking copy to the device
(``non_blocking=False``: torch's ``memcpy_and_sync``). On a CPU nothing waits, so the step's tensors
are told apart here by type: :class:`OnDevice` wraps the tensors that would live on the GPU (the
model's weights, the batch once moved, whatever is computed from them), plain tensors are the host's.
Inside :func:`counting` every such wait on an ``OnDevice`` tensor is recorded with its kind.

The training device is ``DEVICE`` (``cpu:0``): a copy ``.to(DEVICE)`` of a host tensor is a copy to
the GPU (its result is wrapped), ``.cpu()`` / ``.to("cpu")`` of a wrapped one a copy back. What
native code does inside one operator is not seen (the CUDA CTC loss's own copies of its lengths).
"""

import contextlib
from collections import Counter
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

DEVICE = torch.device("cpu", 0)

# aten operators whose result the host must read (a value, or a data-dependent output shape)
_HOST_READS = {
    "_local_scalar_dense",
    "is_nonzero",
    "equal",
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "bincount",
}
# Python-level reads of a whole tensor on the host
_TO_HOST = {"cpu", "tolist", "numpy", "__array__", "__repr__", "__format__"}


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one on the GPU; its ``device`` says ``DEVICE``."""

    waits: Counter | None = None  # set by counting()

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.size(),
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=DEVICE,
            requires_grad=elem.requires_grad,
        )
        wrapper.elem = elem
        return wrapper

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _HOST_READS and cls.waits is not None:
            cls.waits[name] += 1
        unwrapped = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs or {}))
        return tree_map(_wrap, unwrapped)


def _unwrap(value):
    return value.elem if isinstance(value, OnDevice) else value


def _wrap(value):
    if isinstance(value, torch.Tensor) and not isinstance(value, OnDevice):
        return OnDevice(value)
    return value


def on_device(tensor: torch.Tensor) -> OnDevice:
    return OnDevice(tensor.detach().clone())


def move_module(module: torch.nn.Module) -> None:
    """The module's parameters and buffers as ``OnDevice`` tensors (in place, same objects' slots)."""
    for submodule in module.modules():
        for name, parameter in list(submodule._parameters.items()):
            if parameter is not None:
                submodule._parameters[name] = torch.nn.Parameter(
                    on_device(parameter), requires_grad=parameter.requires_grad
                )
        for name, buffer in list(submodule._buffers.items()):
            if buffer is not None:
                submodule._buffers[name] = on_device(buffer)


class _Opaque(torch.autograd.Function):
    """An operator run on the unwrapped tensors as one step, forward and backward: the CPU packed
    LSTM's kernel reads its tensors' memory directly (beside the dispatcher, which a wrapper needs),
    and cuDNN's, which the GPU runs instead, reads nothing on the host."""

    @staticmethod
    def forward(ctx, func, spec, *leaves):
        inputs = [
            leaf.elem.detach().requires_grad_(leaf.requires_grad) if isinstance(leaf, OnDevice) else leaf
            for leaf in leaves
        ]
        with torch.enable_grad():
            outputs = func(*tree_unflatten(inputs, spec))
        flat = list(outputs)
        ctx.inputs, ctx.outputs = inputs, flat
        return tuple(_wrap(o.detach()) if isinstance(o, torch.Tensor) else o for o in flat)

    @staticmethod
    def backward(ctx, *grads):
        pairs = [(o, g) for o, g in zip(ctx.outputs, grads, strict=True) if g is not None and o.requires_grad]
        wanted = [i for i in ctx.inputs if isinstance(i, torch.Tensor) and i.requires_grad]
        found = torch.autograd.grad(
            [o for o, _ in pairs], wanted, [_unwrap(g) for _, g in pairs], allow_unused=True
        )
        by_input = dict(zip(map(id, wanted), found, strict=True))
        return (
            None,
            None,
            *(_wrap(by_input.get(id(i))) if by_input.get(id(i)) is not None else None for i in ctx.inputs),
        )


# operators run as one opaque step (their kernels read memory directly), with the positions of
# their outputs that are on the host whatever the device (the unpacked lengths)
_OPAQUE = {"lstm": (), "_pack_padded_sequence": (1,), "_pad_packed_sequence": (1,)}


def _opaque(func, args, host_outputs: tuple[int, ...]) -> tuple:
    """``func(*args)`` for an operator that returns a tuple of tensors."""
    leaves, spec = tree_flatten(args)
    outputs = _Opaque.apply(func, spec, *leaves)
    return tuple(_unwrap(o).detach() if i in host_outputs else o for i, o in enumerate(outputs))


def _target_device(args, kwargs) -> torch.device | None:
    for value in (*args[1:], kwargs.get("device")):
        if isinstance(value, torch.device | str):
            return torch.device(value)
        if isinstance(value, torch.Tensor):  # .to(other): its device
            return value.device
    return None


class _Counting(TorchFunctionMode):
    def __init__(self, waits: Counter):
        super().__init__()
        self.waits = waits

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        source = args[0] if args else None
        if isinstance(source, OnDevice) and (
            name in _TO_HOST or (name == "to" and _target_device(args, kwargs) == torch.device("cpu"))
        ):
            self.waits[f"{name} to the host"] += 1
        if name in _OPAQUE and any(isinstance(leaf, OnDevice) for leaf in tree_flatten(args)[0]):
            return _opaque(func, args, _OPAQUE[name])
        result = func(*args, **kwargs)
        copied = not isinstance(source, OnDevice) and isinstance(source, torch.Tensor)
        if name == "to" and copied and _target_device(args, kwargs) == DEVICE:
            if not kwargs.get("non_blocking", False):
                self.waits["blocking copy to the device"] += 1
            return on_device(result)
        if kwargs.get("device") is not None and torch.device(kwargs["device"]) == DEVICE:
            return _wrap(result)  # a factory (arange, zeros, tensor…) on the device
        return result


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """The waits (kind → count) of what runs inside the block."""
    waits: Counter = Counter()
    OnDevice.waits = waits
    try:
        with _Counting(waits):
            yield waits
    finally:
        OnDevice.waits = None

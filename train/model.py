"""The course's medium CTC model: residual Conv1d embedding → BiLSTM stack → MLP → log-softmax.

Shapes: features (B, T, D) with lengths (B,) in; log-probabilities (B, T', 41) with output
lengths (B,) out, T' = T after the convolution strides (lengths from the convolution formula).

Lengths may be a tensor on the host or the device (the output lengths come back where they were
given), or :class:`HostLengths`, the form training gives them in: under DDP a tensor argument is
moved to the GPU before the forward, and reading it back would wait for the GPU. Given on the host,
the forward never waits for the GPU: it sorts and packs by host lengths, copies to the device only
without blocking, and returns the output lengths on the host, where the CTC loss reads them.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from shards.vocab import NUM_CLASSES
from train.config import TrainConfig
from train.hardware import lstm_outside_autocast


@dataclass(frozen=True)
class HostLengths:
    """Frame counts (int64, on the host) in a type DDP hands to the forward untouched: it moves
    tensors and lists, tuples and dicts of them to the GPU, never other objects."""

    frames: torch.Tensor


def conv_output_lengths(lengths: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """floor((L + 2p - k) / s) + 1, clamped to at least 1 frame."""
    return torch.clamp((lengths + 2 * padding - kernel_size) // stride + 1, min=1)


def time_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B, T) bool, True on real frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def normalise_utterances(features: torch.Tensor, lengths: torch.Tensor, variance: bool) -> torch.Tensor:
    """Per-utterance cepstral mean (and variance) normalisation over each utterance's own frames: a
    constant channel or speaker offset in the cepstra vanishes (and a scale, with ``variance``);
    padding stays zero."""
    mask = time_mask(lengths, features.shape[1])[:, :, None]
    count = lengths[:, None, None]
    mean = (features * mask).sum(1, keepdim=True) / count
    centred = (features - mean) * mask
    if not variance:
        return centred
    std = (centred.square().sum(1, keepdim=True) / count).sqrt().clamp(min=1e-4)
    return centred / std


class ResidualBlock(nn.Module):
    """conv(stride) → BN → GELU → dropout → conv → BN, plus a 1×1 strided skip, then GELU.

    Frames past each utterance's length are zeroed before every convolution, so that what
    lies in the padding (and BatchNorm's shift of it) never reaches a real frame.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dropout: float):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.first = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride, self.padding, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.second = nn.Sequential(
            nn.Conv1d(out_channels, out_channels, kernel_size, 1, self.padding, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm1d(out_channels)
            )
        )
        self.activation = nn.GELU()

    def output_lengths(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """The lengths after this block, for a batch ``frames`` wide (on any device)."""
        width = (frames + 2 * self.padding - self.kernel_size) // self.stride + 1
        return torch.clamp(
            conv_output_lengths(lengths, self.kernel_size, self.stride, self.padding), max=width
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) with lengths (on x's device) → (B, C', T') with the new lengths; zero past each length."""
        x = x * time_mask(lengths, x.shape[-1])[:, None, :]
        hidden = self.first(x)
        lengths = self.output_lengths(lengths, x.shape[-1])
        mask = time_mask(lengths, hidden.shape[-1])[:, None, :]
        y = self.activation(self.second(hidden * mask) + self.skip(x))
        return y * mask, lengths


class LockedDropout(nn.Module):
    """Variational dropout: one mask per utterance and channel, shared by every time step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        if not self.training or self.p == 0:
            return x
        return x * self._mask(x.shape[0], x)[:, None, :]

    def packed(self, data: torch.Tensor, utterance_of_row: torch.Tensor, batch: int) -> torch.Tensor:
        """The same on a PackedSequence's ``data`` (rows, C): row r belongs to utterance
        ``utterance_of_row[r]`` of ``batch`` (on data's device)."""
        if not self.training or self.p == 0:
            return data
        return data * self._mask(batch, data).index_select(0, utterance_of_row)

    def _mask(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """(batch, C): one keep-or-drop per utterance and channel, scaled by 1 / (1 - p)."""
        return like.new_empty(batch, like.shape[-1]).bernoulli_(1 - self.p) / (1 - self.p)


class _ReverseWithinLengths(torch.autograd.Function):
    """A permutation that is its own inverse, so its gradient is the same gather (not gather's
    generic backward, a scatter-add over the whole batch)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(source)
        return x.gather(1, source)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (source,) = ctx.saved_tensors
        return grad.gather(1, source), None


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence of (B, T, C) reversed over its own first ``length`` steps; padding stays behind.
    Without a gradient to carry it is the plain gather, which TorchScript and ONNX export record."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    source = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    source = source[:, :, None].expand_as(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.gather(1, source)
    return _ReverseWithinLengths.apply(x, source)


class BiLSTMLayer(nn.Module):
    """One bidirectional layer: an ``nn.LSTM(bidirectional=True)`` whose weights serve two paths.

    Called with packed sequences it runs both directions in one cuDNN call, on weights cuDNN keeps
    in one flat buffer. Called with a padded batch it runs each direction's weights as a
    one-direction LSTM, the backward one on each sequence reversed within its own length, so
    padding never reaches a real frame: the same outputs, without the packed CPU backward that is
    ~7x slower (pytorch#149194).

    Checkpoints from before the fused layer name the directions ``forward_lstm.*_l0`` and
    ``backward_lstm.*_l0``; they load as ``lstm.*_l0`` and ``lstm.*_l0_reverse`` (same order,
    so optimiser states keep matching their parameters).
    """

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, batch_first=True, bidirectional=True)
        self.register_load_state_dict_pre_hook(_rename_direction_modules)

    def _direction(self, x: torch.Tensor, suffix: str) -> torch.Tensor:
        """One direction's weights as a one-direction LSTM over (B, T, C), from zero states: the op
        nn.LSTM calls, given them directly (on CUDA it copies them for the call, leaving the fused
        module's flat buffer as it is); TorchScript and ONNX export record it as an LSTM."""
        weights = [getattr(self.lstm, name + suffix) for name in _WEIGHTS]
        zeros = x.new_zeros(1, x.shape[0], self.lstm.hidden_size)
        return torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, False, False, True)[0]

    def forward(
        self, x: torch.Tensor | PackedSequence, lengths: torch.Tensor | None = None
    ) -> torch.Tensor | PackedSequence:
        """Packed sequences → packed sequences: both directions in one call (cuDNN's fast path on
        GPUs). A padded (B, T, C) batch with ``lengths`` on its device → (B, T, 2H): each direction
        a one-direction LSTM, the backward one over each sequence reversed within its own length."""
        if isinstance(x, PackedSequence):
            return self.lstm(x)[0]
        forward = self._direction(x, "")
        backward = self._direction(reverse_within_lengths(x, lengths), "_reverse")
        output = torch.cat([forward, reverse_within_lengths(backward, lengths)], dim=-1)
        return output * time_mask(lengths, x.shape[1])[:, :, None]


_WEIGHTS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _rename_direction_modules(module, state_dict, prefix, *_) -> None:
    for direction, suffix in (("forward_lstm", ""), ("backward_lstm", "_reverse")):
        for name in _WEIGHTS:
            old = f"{prefix}{direction}.{name}"
            if old in state_dict:
                state_dict[f"{prefix}lstm.{name}{suffix}"] = state_dict.pop(old)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class CTCModel(nn.Module):
    def __init__(self, feature_dim: int, config: TrainConfig):
        super().__init__()
        self.config = config
        channels = [feature_dim] + [config.channels] * config.conv_blocks
        self.embedding = nn.ModuleList(
            ResidualBlock(
                channels[i], channels[i + 1], config.kernel_size, config.strides[i], config.conv_dropout
            )
            for i in range(config.conv_blocks)
        )
        sizes = [config.channels] + [2 * config.lstm_hidden] * config.lstm_layers
        self.lstm = nn.ModuleList(
            BiLSTMLayer(sizes[i], config.lstm_hidden) for i in range(config.lstm_layers)
        )
        self.lstm_dropout = LockedDropout(config.lstm_dropout)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.lstm_hidden, config.classifier_hidden),
            nn.GELU(),
            nn.Dropout(config.classifier_dropout),
            nn.Linear(config.classifier_hidden, NUM_CLASSES),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LSTM):
                for name, parameter in module.named_parameters():
                    if name.startswith("weight_hh"):
                        nn.init.orthogonal_(parameter)
                    elif name.startswith("weight_ih"):
                        nn.init.xavier_uniform_(parameter)
                    else:  # biases: zero, forget gate 1 (gates are ordered i, f, g, o)
                        nn.init.zeros_(parameter)
                        hidden = parameter.shape[0] // 4
                        parameter.data[hidden : 2 * hidden] = 0.5  # b_ih + b_hh = 1

    @property
    def time_stride(self) -> int:
        """Input frames per output frame (the product of the convolutions' strides)."""
        return self.config.time_stride

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Output frames of utterances of ``frames`` input frames, each as the model sees it."""
        for block in self.embedding:
            frames = conv_output_lengths(frames, block.kernel_size, block.stride, block.padding)
        return frames

    def use_packed(self, device: torch.device) -> bool:
        if self.config.lstm_impl == "auto":
            return device.type == "cuda"
        return self.config.lstm_impl == "packed"

    def forward(
        self, features: torch.Tensor, lengths: "torch.Tensor | HostLengths"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(lengths, HostLengths):
            host_lengths, where = lengths.frames, lengths.frames.device
        else:  # free when given on the host; else the forward's only wait for the GPU
            host_lengths, where = lengths.cpu(), lengths.device
        device_lengths = host_lengths.to(features.device, non_blocking=True)
        if self.config.utterance_norm != "none":
            features = normalise_utterances(
                features, device_lengths, self.config.utterance_norm == "mean_var"
            )
        x = features.transpose(1, 2)  # (B, D, T) for the convolutions
        for block in self.embedding:
            host_lengths = block.output_lengths(host_lengths, x.shape[-1])
            x, device_lengths = block(x, device_lengths)
        x = self._lstm_stack(x.transpose(1, 2), device_lengths, host_lengths)  # (B, T', C) in and out
        return self.classifier(x).float().log_softmax(dim=-1), host_lengths.to(where, non_blocking=True)

    def _lstm_stack(self, x: torch.Tensor, lengths: torch.Tensor, host_lengths: torch.Tensor) -> torch.Tensor:
        layers = self._packed_layers if self.use_packed(x.device) else self._padded_layers
        if lstm_outside_autocast(x.device.type, _autocast_dtype(x.device.type)):
            with torch.autocast(x.device.type, enabled=False):
                return layers(x.float(), lengths, host_lengths)
        return layers(x, lengths, host_lengths)

    def _padded_layers(self, x: torch.Tensor, lengths: torch.Tensor, _host_lengths) -> torch.Tensor:
        for i, layer in enumerate(self.lstm):
            if i > 0:
                x = self.lstm_dropout(x)
            x = layer(x, lengths)
        return x

    def _packed_layers(self, x: torch.Tensor, _lengths, host_lengths: torch.Tensor) -> torch.Tensor:
        """One PackedSequence for the whole stack: the batch sorted longest first on the host and
        packed once (torch's per-call packing copies its sort order to the device and back, each
        a wait for the GPU), every layer run on it, locked dropout on its rows, unpacked once."""
        order = torch.argsort(host_lengths, descending=True, stable=True)
        on_device = lambda t: t.to(x.device, non_blocking=True)  # noqa: E731 (never a wait)
        sequences = pack_padded_sequence(
            x.index_select(0, on_device(order)), host_lengths[order], batch_first=True
        )
        utterance_of_row = on_device(_utterance_of_row(sequences.batch_sizes))
        data = sequences.data
        for i, layer in enumerate(self.lstm):
            if i > 0:
                data = self.lstm_dropout.packed(data, utterance_of_row, len(order))
            data = layer(PackedSequence(data, sequences.batch_sizes)).data
        padded = pad_packed_sequence(
            PackedSequence(data, sequences.batch_sizes), batch_first=True, total_length=x.shape[1]
        )[0]
        return padded.index_select(0, on_device(torch.argsort(order)))


def _utterance_of_row(batch_sizes: torch.Tensor) -> torch.Tensor:
    """For packed data sorted longest first: the (sorted) utterance each row belongs to. The rows
    of time step t are utterances 0 … batch_sizes[t] - 1, in that order."""
    steps = torch.arange(int(batch_sizes[0]))[None, :].expand(len(batch_sizes), -1)
    return steps[steps < batch_sizes[:, None]]

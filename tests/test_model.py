"""The model: lengths, LSTM equivalence and its precision rule, learning."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from train.config import TrainConfig
from train.hardware import lstm_dtype, lstm_outside_autocast
from train.model import BiLSTMLayer, CTCModel, reverse_within_lengths

TINY = dict(channels=16, lstm_layers=2, lstm_hidden=16, classifier_hidden=32, lstm_impl="padded")


@pytest.mark.parametrize("strides", [[1, 1], [1, 2], [2, 2], [4, 1]])
def test_output_lengths_follow_the_convolution_formula(strides):
    model = CTCModel(13, TrainConfig(**TINY, strides=strides)).eval()
    lengths = torch.tensor([1, 2, 3, 7, 64, 200])
    log_probs, out = model(torch.randn(len(lengths), 200, 13), lengths)
    expected = lengths.clone()
    for stride in strides:  # kernel 3, padding 1
        expected = torch.clamp((expected + 2 - 3) // stride + 1, min=1)
    assert out.tolist() == expected.tolist()
    # Invariant: never longer than the input, and the tensor holds the longest
    assert (out <= lengths).all() and log_probs.shape[1] == int(out.max())
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(()), atol=1e-5)


def test_padding_does_not_change_the_output():
    model = CTCModel(13, TrainConfig(**TINY)).eval()
    features = torch.randn(1, 50, 13)
    alone, _ = model(features, torch.tensor([50]))
    padded, _ = model(torch.cat([features, torch.randn(1, 30, 13)], dim=1), torch.tensor([50]))
    # Invariant: what lies beyond an utterance's length cannot reach its outputs (BatchNorm in eval)
    assert torch.allclose(alone[0, :25], padded[0, :25], atol=1e-5)


@pytest.mark.parametrize("norm", ["mean", "mean_var"])
def test_utterance_normalisation_removes_a_per_utterance_offset(norm):
    torch.manual_seed(6)
    model = CTCModel(13, TrainConfig(**TINY, utterance_norm=norm)).eval()
    features, lengths = torch.randn(3, 40, 13), torch.tensor([40, 25, 9])
    offset, scale = torch.randn(3, 1, 13) * 3, (torch.rand(3, 1, 13) + 0.5 if norm == "mean_var" else 1)
    shifted = features * scale + offset  # a different channel offset (and scale) per utterance
    (plain, out), (moved, _) = model(features, lengths), model(shifted, lengths)
    # Invariant: a constant cepstral offset (scale) cannot change what the model hears (padding aside)
    for b, n in enumerate(out.tolist()):
        assert torch.allclose(plain[b, :n], moved[b, :n], atol=1e-4)
    without = CTCModel(13, TrainConfig(**TINY)).eval()
    assert not torch.allclose(without(features, lengths)[0], without(shifted, lengths)[0], atol=1e-3)


@pytest.mark.parametrize("packed", [False, True])
def test_bilstm_layer_equals_packed_bidirectional_nn_lstm(packed):
    torch.manual_seed(0)
    reference = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
    layer = BiLSTMLayer(8, 6)
    layer.lstm.load_state_dict(reference.state_dict())
    x, lengths = torch.randn(5, 12, 8), torch.tensor([12, 9, 4, 1, 7])
    sequences = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(reference(sequences)[0], batch_first=True, total_length=12)[0]
    if packed:
        output = pad_packed_sequence(layer(sequences), batch_first=True, total_length=12)[0]
    else:
        output = layer(x, lengths)
    assert torch.allclose(output, expected, atol=1e-6)


def test_weights_saved_before_the_fused_layer_load_in_the_same_order():
    """Checkpoints from before the fused layer: per direction ``forward_lstm``/``backward_lstm``."""
    torch.manual_seed(5)
    config = TrainConfig(**TINY | {"lstm_layers": 2})
    model = CTCModel(13, config).eval()
    old = {}
    for name, tensor in model.state_dict().items():
        layer, fused, weight = name.rpartition(".lstm.")
        if not fused:
            old[name] = tensor
            continue
        direction = "backward_lstm" if weight.endswith("_reverse") else "forward_lstm"
        old[f"{layer}.{direction}.{weight.removesuffix('_reverse')}"] = tensor
    # an optimiser's state is by position: the new parameters come in the old modules' order
    weights = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    expected = [f"lstm.1.{d}_lstm.{w}" for d in ("forward", "backward") for w in weights]
    assert [name for name in old if name.startswith("lstm.1.")] == expected
    restored = CTCModel(13, config).eval()
    restored.load_state_dict(old)
    features, lengths = torch.randn(2, 30, 13), torch.tensor([30, 17])
    assert torch.equal(restored(features, lengths)[0], model(features, lengths)[0])


def test_reverse_within_lengths_leaves_padding_behind():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_within_lengths(x, torch.tensor([3, 5]))
    assert out[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    # its gradient is the same permutation applied to the incoming gradient
    x = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reverse_within_lengths(t, torch.tensor([7, 4, 1])), (x,))


@pytest.mark.parametrize("bf16", [False, True])
def test_loss_falls_on_a_tiny_batch(bf16):
    """Also under CPU bf16 autocast (how training runs on CPUs with AMX): the LSTMs compute in
    bfloat16, the log-probabilities and the loss stay float32."""
    torch.manual_seed(3)
    model = CTCModel(13, TrainConfig(**TINY, conv_dropout=0, lstm_dropout=0, classifier_dropout=0))
    features, lengths = torch.randn(4, 60, 13), torch.tensor([60, 55, 50, 40])
    labels, label_lengths = torch.randint(1, 41, (4, 8)), torch.tensor([8, 7, 6, 5])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    lstm_dtypes = set()
    model.lstm[0].register_forward_hook(lambda m, i, out: lstm_dtypes.add(out.dtype))
    losses = []
    for _ in range(60):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            log_probs, out = model(features, lengths)
        assert log_probs.dtype == torch.float32
        loss = nn.functional.ctc_loss(
            log_probs.transpose(0, 1), labels, out, label_lengths, zero_infinity=True
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert lstm_dtypes == {torch.bfloat16 if bf16 else torch.float32}
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("autocast", [False, True])
def test_whole_model_packed_equals_padded_in_outputs_and_every_gradient(autocast):
    """lstm_impl packed (what CUDA runs) and padded (what CPUs run) are one model: a ragged batch,
    3 layers, time stride 4, per-utterance CMN; float32, and under CPU bf16 autocast."""
    settings = dict(
        TINY,
        lstm_layers=3,
        strides=[2, 2],
        utterance_norm="mean",
        conv_dropout=0,
        lstm_dropout=0,
        classifier_dropout=0,
    )
    torch.manual_seed(4)
    padded = CTCModel(13, TrainConfig(**settings))
    packed = CTCModel(13, TrainConfig(**settings | {"lstm_impl": "packed"}))
    packed.load_state_dict(padded.state_dict())
    calls = []  # each call of a model's nn.LSTM modules: one fused call per layer, packed path only
    for name, model in (("padded", padded), ("packed", packed)):
        for module in model.modules():
            if isinstance(module, nn.LSTM):
                module.register_forward_hook(
                    lambda m, i, o, name=name: calls.append((name, type(i[0]), m.bidirectional))
                )
    features, lengths = torch.randn(5, 90, 13), torch.tensor([90, 61, 33, 8, 75])
    labels, label_lengths = torch.randint(1, 41, (5, 6)), torch.tensor([6, 5, 4, 1, 6])
    outputs = []
    for model in (padded, packed):
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            log_probs, out = model(features, lengths)
        loss = nn.functional.ctc_loss(
            log_probs.transpose(0, 1), labels, out, label_lengths, zero_infinity=True
        )
        loss.backward()
        real = torch.arange(log_probs.shape[1])[None, :] < out[:, None]
        outputs.append((log_probs[real], out, {n: p.grad for n, p in model.named_parameters()}))
    (a, out_a, grads_a), (b, out_b, grads_b) = outputs
    tolerance = 2e-2 if autocast else 1e-5  # bf16 rounds the two paths' sums in another order
    assert calls == [("packed", nn.utils.rnn.PackedSequence, True)] * 3
    assert torch.equal(out_a, out_b)
    assert torch.allclose(a, b, atol=tolerance)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        scale = grad.abs().max().clamp(min=1e-6)
        assert (grad - grads_b[name]).abs().max() / scale < (5e-2 if autocast else 1e-4), name


def test_the_lstm_leaves_a_cuda_bf16_autocast_and_keeps_every_other():
    """cuDNN's RNN autocast would run a bf16 request in float16: only that case runs in float32."""
    assert lstm_outside_autocast("cuda", torch.bfloat16)
    assert not lstm_outside_autocast("cuda", torch.float16)  # fp16 as asked, with a GradScaler
    assert not lstm_outside_autocast("cuda", None)
    assert not lstm_outside_autocast("cpu", torch.bfloat16)  # oneDNN computes bf16 as asked
    # the start-up line and docs/training.md's table say the same, from the same rule
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [lstm_dtype(p, cuda) for p in ("bf16", "fp16", "fp32")] == [
        torch.float32,
        torch.float16,
        torch.float32,
    ]
    assert [lstm_dtype(p, cpu) for p in ("bf16", "fp32")] == [torch.bfloat16, torch.float32]


def test_lengths_come_back_where_they_were_given():
    model = CTCModel(13, TrainConfig(**TINY)).eval()
    features, lengths = torch.randn(3, 40, 13), torch.tensor([40, 17, 3])
    _, out = model(features, lengths)
    assert out.device == lengths.device and out.dtype == torch.int64

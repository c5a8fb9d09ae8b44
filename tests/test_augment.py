"""train/augment.py: masking, noise, warps and stretches, inside each utterance's length only."""

import torch

from train.augment import AddNoise, FrequencyWarp, MelBandMask, SpecMask, TimeStretch


def test_masking_and_noise_never_touch_padding():
    torch.manual_seed(1)
    features = torch.randn(16, 80, 13) + 5
    lengths = torch.randint(1, 81, (16,))
    lengths[0] = 80
    for module in (SpecMask(1.0, 3, 30, 2, 5), AddNoise(1.0, 0.5, "gaussian"), AddNoise(1.0, 0.5, "gumbel")):
        out = module.train()(features, lengths)
        padding = torch.arange(80)[None, :] >= lengths[:, None]
        # Invariant: padded frames are exactly as they came in; real frames changed somewhere
        assert torch.equal(out[padding], features[padding])
        assert not torch.equal(out[~padding], features[~padding])
        assert torch.equal(module.eval()(features, lengths), features)


def test_noise_goes_to_a_random_subset():
    torch.manual_seed(2)
    features = torch.zeros(400, 10, 3)
    out = AddNoise(0.25, 1.0).train()(features, torch.full((400,), 10))
    share = (out.abs().sum(dim=(1, 2)) > 0).float().mean()
    assert 0.15 < share < 0.35


def test_frequency_warp_round_trips_and_stays_inside_lengths():
    torch.manual_seed(4)
    mean, std = torch.randn(13).tolist(), (torch.rand(13) + 0.5).tolist()
    features, lengths = torch.randn(6, 50, 13), torch.tensor([50, 40, 30, 20, 10, 1])
    # Invariant: no warp (factor 1) gives the cepstra back: the 13×40 DCT has orthonormal rows
    almost_identity = FrequencyWarp(1.0, 1e-9, mean, std).train()(features, lengths)
    assert torch.allclose(almost_identity, features, atol=1e-4)
    warped = FrequencyWarp(1.0, 0.1, mean, std).train()(features, lengths)
    padding = torch.arange(50)[None, :] >= lengths[:, None]
    assert torch.equal(warped[padding], features[padding]) and not torch.allclose(warped, features, atol=1e-3)
    assert torch.equal(FrequencyWarp(1.0, 0.1, mean, std).eval()(features, lengths), features)


def test_mel_band_mask_flattens_bands_and_keeps_each_utterance_mean():
    torch.manual_seed(6)
    mean, std = torch.randn(13).tolist(), (torch.rand(13) + 0.5).tolist()
    features, lengths = torch.randn(6, 50, 13), torch.tensor([50, 40, 30, 20, 10, 1])
    real = (torch.arange(50)[None, :] < lengths[:, None])[:, :, None]

    def utterance_means(x):
        return (x * real).sum(1) / lengths[:, None]

    masked = MelBandMask(1.0, 2, 8, mean, std).train()(features, lengths)
    # Invariant: a band filled with its own mean over the utterance keeps that mean, so the
    # utterance's mean cepstrum (the DCT of its mean log-mel) is unchanged; frames do change
    assert torch.allclose(utterance_means(masked), utterance_means(features), atol=1e-4)
    assert not torch.allclose(masked[:5], features[:5], atol=1e-3)
    assert torch.equal(masked[~real.expand_as(masked)], features[~real.expand_as(features)])
    # Every band masked: nothing moves any more, each frame is the utterance's mean
    flat = MelBandMask(1.0, 200, 40, mean, std).train()(features, lengths)
    means = utterance_means(features)[:, None, :].expand_as(features)
    assert torch.allclose(flat[real.expand_as(flat)], means[real.expand_as(means)], atol=1e-4)
    assert torch.equal(MelBandMask(1.0, 2, 8, mean, std).eval()(features, lengths), features)
    assert torch.equal(MelBandMask(1.0, 0, 8, mean, std).train()(features, lengths), features)


def test_time_stretch_resamples_each_utterance_inside_its_length():
    torch.manual_seed(5)
    lengths = torch.tensor([60, 41, 20, 7, 1])
    ramp = torch.arange(60.0)[None, :, None].expand(5, 60, 3).clone()  # frame t holds t
    ramp[torch.arange(60)[None, :] >= lengths[:, None]] = -1.0  # padding
    stretched, new_lengths = TimeStretch(1.0, 0.2).train()(ramp, lengths)
    # Invariant: the new length is the old one over a factor in [0.8, 1.2], and the tensor is as wide as the longest
    assert ((new_lengths >= torch.floor(lengths / 1.2)) & (new_lengths <= torch.ceil(lengths / 0.8))).all()
    assert stretched.shape[1] == int(new_lengths.max()) and new_lengths.tolist() != lengths.tolist()
    for b in range(5):
        n, m = int(new_lengths[b]), int(lengths[b])
        # linear interpolation of a ramp is the ramp: frame t reads the original at t * m / n, never padding
        expected = torch.arange(n) * (m / n) if n > 1 else torch.zeros(1)
        assert torch.allclose(stretched[b, :n, 0], expected.clamp(max=m - 1), atol=1e-4)
        assert (stretched[b, n:] == 0).all()
    unchanged, same = TimeStretch(0.0, 0.2).train()(ramp, lengths)
    assert unchanged is ramp and same is lengths
    assert TimeStretch(1.0, 0.2).eval()(ramp, lengths)[0] is ramp

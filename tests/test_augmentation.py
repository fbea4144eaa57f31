"""Training-time augmentation (maggotflow.augmentation)."""

from __future__ import annotations

import pytest
import torch

from maggotflow.augmentation import PRESETS, Augmentation, augment, preset


def _segments(n: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(n, 2, 5, 20)


def test_augmentation_is_seeded_and_keeps_the_shape():
    x = _segments()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_each_part_does_what_it_says():
    x = _segments()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    off = dict(time_warp=0.0, scale=0.0, bend=0.0, mirror=False, rotation=0.0, noise=0.0)
    assert torch.allclose(augment(x, g(), aug=Augmentation(**off)), x)
    # the time warp keeps the centre step and only resamples along time
    warped = augment(x, g(), aug=Augmentation(**dict(off, time_warp=0.5)))
    assert torch.allclose(warped[..., 10], x[..., 10]) and not torch.allclose(warped, x)
    # mirror: x unchanged, y negated or kept, per segment
    mirrored = augment(x, g(), aug=Augmentation(**dict(off, mirror=True)))
    assert torch.allclose(mirrored[:, 0], x[:, 0])
    sign = (mirrored[:, 1] / x[:, 1]).flatten(1).median(dim=1).values
    assert set(sign.round().tolist()) == {-1.0, 1.0}
    # size: a per-segment factor within +-10 %
    scaled = augment(x, g(), aug=Augmentation(**dict(off, scale=0.1)))
    ratio = (scaled / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6
    # noise: SD at most the setting
    noisy = augment(x, g(), aug=Augmentation(**dict(off, noise=0.03)))
    assert 0 < (noisy - x).std() < 0.03


def test_presets_are_named():
    assert preset("none") is None and preset("noise") is PRESETS["noise"]
    assert PRESETS["noise"].time_warp == 0 and PRESETS["full"].time_warp > 0
    with pytest.raises(ValueError, match="augment must be one of none, noise, full"):
        preset("strong")

"""Training-time augmentation of normalised segments: what varies between labs, not what
defines a behaviour.

Applied on the device to each training batch (fine-tuning with `TrainConfig.augment`,
pretraining with `PretrainConfig.augment`, each naming a preset below), never to validation or prediction. Each segment
of a batch draws its own, from the loop's seeded generator:

- time warp: the window is resampled at `centre + (j - centre) * r`, a speed factor r
  log-uniform in [1/(1 + time_warp), 1 + time_warp] (slower or faster crawlers, other
  stride frequencies: larval stride frequency and speed vary about two-fold with
  temperature, genotype and age, hence the default +-50 %; chosen before any regime was
  measured); points beyond the window's ends are edge-clamped, as the segments
  of a track's first and last steps are;
- size: all coordinates times a factor uniform in 1 +- scale (larva length estimates
  differ between trackers);
- bend: the lateral (y) coordinates times a further 1 +- bend (stiffer or softer bodies,
  weaker or stronger head sweeps);
- mirror: y -> -y with probability 1/2 (left and right are the same behaviour);
- rotation: a small rotation, uniform in +- rotation rad (the reference axis of a bent
  larva is uncertain);
- noise: Gaussian point jitter, its SD drawn per segment uniformly in [0, noise] body
  lengths (tracker noise relative to the larva: from well under 1 % for large larvae
  filmed finely to ~3 % for small larvae at ~0.1 mm per pixel).

Two presets (`PRESETS`, the `augment` setting of pretraining and fine-tuning): "noise"
(mirror, size +-5 %, point noise: what a tracker changes) and "full" (all of the above:
also the speed, the bend and the rotation); "none" turns augmentation off.

In pretraining the past + present + future span is augmented as one, warped about the
present window's centre, so the decoder's targets move with its input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Augmentation:
    """Strength of each augmentation (0 turns it off); see the module docstring."""

    time_warp: float = 0.5
    scale: float = 0.1
    bend: float = 0.25
    mirror: bool = True
    rotation: float = 0.1
    noise: float = 0.03

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT = Augmentation()
PRESETS = {"noise": Augmentation(time_warp=0.0, scale=0.05, bend=0.0, rotation=0.0), "full": DEFAULT}
AUGMENT_CHOICES = ("none", *PRESETS)


def preset(name: str) -> Augmentation | None:
    """The augmentation an `augment` setting names (None for "none"); ValueError otherwise."""
    if name == "none":
        return None
    if name not in PRESETS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_CHOICES)}, got {name!r}")
    return PRESETS[name]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(x: torch.Tensor, generator: torch.Generator, centre: int | None = None,
            aug: Augmentation = DEFAULT) -> torch.Tensor:
    """An augmented copy of segments `x` (B, 2, P, W); `centre`: the time index the warp
    keeps fixed (default W // 2). Random draws come from the CPU `generator`."""
    b, _, _, w = x.shape
    centre = w // 2 if centre is None else centre
    device, dtype = x.device, x.dtype
    out = x
    if aug.time_warp > 0:
        bound = math.log1p(aug.time_warp)
        rate = torch.exp(_uniform(b, -bound, bound, generator)).to(device, dtype)  # (B,)
        j = torch.arange(w, device=device, dtype=dtype)
        pos = (centre + (j[None, :] - centre) * rate[:, None]).clamp(0, w - 1)  # (B, W)
        i0 = pos.floor().long().clamp(max=w - 2) if w > 1 else pos.floor().long()
        frac = (pos - i0.to(dtype))[:, None, None, :]
        idx0 = i0[:, None, None, :].expand(b, x.shape[1], x.shape[2], w)
        a0 = torch.gather(out, 3, idx0)
        a1 = torch.gather(out, 3, (idx0 + 1).clamp(max=w - 1))
        out = a0 + frac * (a1 - a0)
    sx = _uniform(b, 1 - aug.scale, 1 + aug.scale, generator)
    sy = sx * _uniform(b, 1 - aug.bend, 1 + aug.bend, generator)
    if aug.mirror:
        sy = sy * torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    angle = _uniform(b, -aug.rotation, aug.rotation, generator)
    cos, sin = torch.cos(angle).to(device, dtype), torch.sin(angle).to(device, dtype)
    px = out[:, 0] * sx.to(device, dtype)[:, None, None]
    py = out[:, 1] * sy.to(device, dtype)[:, None, None]
    c, s = cos[:, None, None], sin[:, None, None]
    out = torch.stack([c * px - s * py, s * px + c * py], dim=1)
    if aug.noise > 0:
        sd = _uniform(b, 0.0, aug.noise, generator).to(device, dtype)[:, None, None, None]
        noise = torch.randn(out.shape, generator=generator).to(device, dtype)
        out = out + sd * noise
    return out

r"""A small conditional U-Net for fields on a regular latitude–longitude grid.

Why a U-Net and not an SFNO: spherical Fourier neural operators need spherical harmonic
transforms (torch-harmonics, not a dependency here); a convolutional U-Net needs nothing but
torch, trains in minutes on one GPU at 64×32 and in a few minutes on a CPU for a tiny demo, and the
sphere's topology is honoured by the padding instead of by the transform:

- **longitude** is periodic: circular padding, so the network is equivariant to longitude shifts
  (exactly for shifts that are multiples of ``2**(levels-1)`` grid points, because of the
  stride-2 pooling; the test checks this);
- **poles**: the row beyond a pole is the row next to it seen from the other side of the pole,
  i.e. latitude-mirrored and rolled by ``W/2`` in longitude (``pole="roll"``, needs even ``W``);
  ``"reflect"`` and ``"zero"`` are offered for comparison.

Inputs (preconditioned by :class:`pipeline.models.neural.NeuralDenoiser`):

- ``x``       ``[B, C, H, W]``    the scaled noisy state ``c_in * y_t``;
- ``cond``    ``[B, K, C, H, W]`` the K previous states (normalised), K fixed at construction
  (``K = 0``: unconditional, ``cond`` empty; the smoother's window prior, :mod:`.window_unet`);
- ``c_noise`` ``[B]``             the noise-level code ``log(sigma) / 4``.

Output ``[B, C, H, W]`` (the EDM network ``F``). Two static fields, ``sin(lat)`` and ``cos(lat)``,
are appended to the input so the network knows where it is in latitude (never in longitude).
The noise level enters every residual block through FiLM (``h * (1 + scale) + shift``) from a
sinusoidal embedding of ``c_noise``.

Shape: ``H`` and ``W`` must be divisible by ``2**(len(mults)-1)``; ``W`` even for ``pole="roll"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PoleMode = Literal["roll", "reflect", "zero"]


class MultsDict:
    """``to_dict``/``from_dict`` of a dataclass config with a ``mults`` tuple (a JSON list in the checkpoint's
    metadata, missing in old ones: ``(1, 2, 2)``): the U-Net configs' (:class:`UNetConfig`,
    :class:`~.window_unet.WindowUNetConfig`)."""

    def to_dict(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        d["mults"] = list(self.mults)  # type: ignore[attr-defined]
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["mults"] = tuple(d.get("mults", (1, 2, 2)))
        return cls(**d)


@dataclass(frozen=True)
class UNetConfig(MultsDict):
    """Architecture hyper-parameters (stored in the checkpoint metadata)."""

    channels: int  # C, state channels (variable × level)
    history: int = 2  # K, previous states in the condition (0: unconditional)
    base: int = 32  # channels at full resolution
    mults: tuple[int, ...] = (1, 2, 2)  # channel multiplier per resolution level
    blocks: int = 1  # residual blocks per level (down path; the up path has blocks + 1)
    emb: int = 64  # noise-embedding width
    pole: PoleMode = "roll"


def sphere_pad(x: Tensor, pad: int, pole: PoleMode = "roll") -> Tensor:
    """Pad ``[B, C, H, W]`` by ``pad`` cells: circular in longitude, across the poles in latitude.

    Rows ``0..H-1`` run from one pole to the other (either order). ``pole="roll"`` puts above
    row 0 the rows ``pad-1..0`` rolled by ``W/2`` (the field continued over the pole).
    Returns ``[B, C, H + 2 pad, W + 2 pad]``.
    """
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    if pole == "roll":
        if w % 2:
            raise ValueError(f"pole='roll' needs an even number of longitudes, got W={w}")
        top = torch.roll(x[..., :pad, :].flip(-2), w // 2, dims=-1)
        bottom = torch.roll(x[..., h - pad:, :].flip(-2), w // 2, dims=-1)
        x = torch.cat([top, x, bottom], dim=-2)
    elif pole == "reflect":
        x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    elif pole == "zero":
        x = F.pad(x, (0, 0, pad, pad))
    else:
        raise ValueError(f"unknown pole padding {pole!r}; choose roll, reflect or zero")
    return torch.cat([x[..., w - pad:], x, x[..., :pad]], dim=-1)


class SphereConv(nn.Conv2d):
    """3×3 (or k×k, odd) convolution with :func:`sphere_pad` instead of zero padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, pole: PoleMode = "roll"):
        super().__init__(cin, cout, kernel, padding=0)
        self.pad, self.pole = kernel // 2, pole

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(sphere_pad(x, self.pad, self.pole))


def _groups(ch: int) -> int:
    for g in (8, 4, 2):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class ResBlock(nn.Module):
    """``h = conv(silu(norm(x))); h = h (1 + s) + b; out = skip(x) + conv(silu(norm(h)))``, (s, b) from the embedding."""

    def __init__(self, cin: int, cout: int, emb: int, pole: PoleMode):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = SphereConv(cin, cout, pole=pole)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = SphereConv(cout, cout, pole=pole)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


def noise_embedding(c_noise: Tensor, dim: int, max_period: float = 1e4) -> Tensor:
    """Sinusoidal embedding ``[cos(c f_i), sin(c f_i)]``, ``f_i = max_period^(-i/(dim/2))``: ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    # scale so that c_noise in about [-2, 2] spans many periods of the fastest frequencies
    arg = 100.0 * c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1).to(c_noise.dtype if c_noise.is_floating_point() else torch.float32)


class SphereUNet(nn.Module):
    """``F(x [B,C,H,W], cond [B,K,C,H,W], c_noise [B]) -> [B,C,H,W]``; see the module docstring."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        widths = [cfg.base * m for m in cfg.mults]
        cin = cfg.channels * (1 + cfg.history) + 2
        self.embed = nn.Sequential(nn.Linear(cfg.emb, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))
        self.stem = SphereConv(cin, widths[0], pole=cfg.pole)
        self.down = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for i, w in enumerate(widths):
            if i > 0:
                skips.append(ch)  # the pooled features
            level = nn.ModuleList()
            for _ in range(cfg.blocks):
                level.append(ResBlock(ch, w, cfg.emb, cfg.pole))
                ch = w
                skips.append(ch)
            self.down.append(level)
        self.mid = ResBlock(ch, ch, cfg.emb, cfg.pole)
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            level = nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                level.append(ResBlock(ch + skips.pop(), w, cfg.emb, cfg.pole))
                ch = w
            self.up.append(level)
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = SphereConv(ch, cfg.channels, pole=cfg.pole)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def latitude_features(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[2, H, W]``: sin and cos of cell-centre latitudes (rows equally spaced pole to pole)."""
        lat = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * math.pi - math.pi / 2
        f = torch.stack([torch.sin(lat), torch.cos(lat)])[:, :, None].expand(2, h, w)
        return f.to(dtype)

    def forward(self, x: Tensor, cond: Tensor, c_noise: Tensor) -> Tensor:
        cfg = self.config
        b, c, h, w = x.shape
        if cond.shape != (b, cfg.history, c, h, w):
            raise ValueError(f"condition must be [B, K={cfg.history}, C={c}, H, W] = {(b, cfg.history, c, h, w)}, got {tuple(cond.shape)}")
        if c != cfg.channels:
            raise ValueError(f"network built for C={cfg.channels} channels, got {c}")
        factor = 2 ** (len(cfg.mults) - 1)
        if h % factor or w % factor:
            raise ValueError(f"H={h} and W={w} must be divisible by {factor} (2**(levels-1))")
        lat = self.latitude_features(h, w, x.device, x.dtype).expand(b, 2, h, w)
        emb = self.embed(noise_embedding(c_noise.reshape(-1).expand(b), cfg.emb).to(x.dtype))
        hcur = self.stem(torch.cat([x, cond.reshape(b, cfg.history * c, h, w), lat], dim=1))
        skips = [hcur]
        for i, level in enumerate(self.down):
            if i > 0:
                hcur = F.avg_pool2d(hcur, 2)
                skips.append(hcur)
            for block in level:
                hcur = block(hcur, emb)
                skips.append(hcur)
        hcur = self.mid(hcur, emb)
        for level in self.up:
            for block in level:
                skip = skips.pop()
                if skip.shape[-2:] != hcur.shape[-2:]:
                    hcur = F.interpolate(hcur, size=skip.shape[-2:], mode="nearest")
                hcur = block(torch.cat([hcur, skip], dim=1), emb)
        return self.out(F.silu(self.out_norm(hcur)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

r"""The network ``F`` of the smoother's window prior on a ring: a periodic 1-D convolutional network.

Input ``x`` ``[B, W, D]`` (the scaled noised window ``c_in (x_sigma - mu)`` of ``W = 2k+1`` states of ``D``
components on a ring: Lorenz-96, the linear twin) and ``c_noise`` ``[B]``; output ``[B, W, D]`` (EDM's ``F``;
the preconditioning is :mod:`pipeline.smoothers.neural`). The ``W`` states are the channels, the ``D``
components the positions of the ring; every convolution ``*`` has ``kernel`` taps and circular padding, so
``F`` commutes with the ring's rotations, ``F(roll(x, r))[.., d] = F(x)[.., d - r]``: the local coupling is
learned once and applied at every position. ``depth`` residual blocks of ``channels`` channels,

    h_0 = A * x,   h_{l+1} = h_l + B_l * silu((1 + s_l) GN(C_l * silu(h_l)) + b_l),   F = O * silu(GN(h_depth)),

``GN`` a group norm over channels and positions (rotation-invariant), ``(s_l, b_l)`` ``[channels]`` linear
in an embedding of ``c_noise`` (sinusoidal, then an MLP; FiLM as in :mod:`.window_mlp`). ``O`` and every
``B_l`` start at zero, so ``F = 0`` at initialisation. Receptive field: ``1 + (2 depth + 2)(kernel - 1)``
positions (clipped by the ring).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .window_mlp import window_embedding


@dataclass(frozen=True)
class WindowConvConfig:
    """Architecture (stored in the checkpoint metadata)."""

    width: int  # W = 2k+1 states in the window: the input and output channels
    dim: int  # D positions on the ring
    channels: int = 64
    depth: int = 4  # residual blocks
    kernel: int = 5  # taps per convolution (odd)
    emb: int = 64  # noise-embedding width

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.kernel % 2 == 0 or self.kernel // 2 > self.dim:
            raise ValueError(f"kernel must be odd, >= 1 and at most 2 dim + 1 = {2 * self.dim + 1} (got {self.kernel})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WindowConvConfig":
        return cls(**d)


def ring_conv(c_in: int, c_out: int, kernel: int) -> nn.Conv1d:
    """A convolution over the ring's positions: ``kernel`` taps, circular padding, same length."""
    return nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, padding_mode="circular")


def group_norm(channels: int) -> nn.GroupNorm:
    """Eight groups when they divide ``channels``, else one."""
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class Block(nn.Module):
    """``h + B * silu((1 + s) GN(C * silu(h)) + b)``, ``(s, b)`` from the noise embedding."""

    def __init__(self, channels: int, kernel: int, emb: int):
        super().__init__()
        self.inner = ring_conv(channels, channels, kernel)
        self.norm = group_norm(channels)
        self.film = nn.Linear(emb, 2 * channels)
        self.outer = ring_conv(channels, channels, kernel)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[..., None].chunk(2, dim=1)
        return h + self.outer(F.silu(self.norm(self.inner(F.silu(h))) * (1 + scale) + shift))


class WindowConv(nn.Module):
    """``F(x [B, W, D], c_noise [B]) -> [B, W, D]``; see the module docstring."""

    def __init__(self, config: WindowConvConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = nn.Sequential(nn.Linear(cfg.emb, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))
        self.stem = ring_conv(cfg.width, cfg.channels, cfg.kernel)
        self.blocks = nn.ModuleList(Block(cfg.channels, cfg.kernel, cfg.emb) for _ in range(cfg.depth))
        self.out_norm = group_norm(cfg.channels)
        self.out = ring_conv(cfg.channels, cfg.width, cfg.kernel)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = window_embedding(self.config, self.embed, x, c_noise)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))

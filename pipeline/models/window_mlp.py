r"""The network ``F`` of the smoother's trained window prior: an MLP over ``W`` stacked states.

Input ``x`` ``[B, W, D]`` (the scaled noised window ``c_in (x_sigma - mu)`` of ``W = 2k+1`` states of ``D``
components, read as ``W D`` values) and ``c_noise`` ``[B]``; output ``[B, W, D]`` (EDM's ``F``; the
preconditioning is :mod:`pipeline.smoothers.neural`). ``depth`` residual blocks of ``hidden`` units,

    h_0 = A x,   h_{l+1} = h_l + B_l silu((1 + s_l) LN(C_l silu(h_l)) + b_l),   F = O silu(LN(h_depth)),

``(s_l, b_l)`` linear in an embedding of ``c_noise`` (sinusoidal, then an MLP; FiLM as in the U-Net). ``O`` and
every ``B_l`` start at zero, so ``F = 0`` at initialisation. No structure in time or space is assumed: the
whole window is one vector, as in the SDA seed's local score network for Lorenz-63 (Rozet & Louppe: an MLP
over ``W × 3`` values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .unet import noise_embedding


@dataclass(frozen=True)
class WindowMLPConfig:
    """Architecture (stored in the checkpoint metadata)."""

    width: int  # W = 2k+1 states in the window
    dim: int  # D components per state
    hidden: int = 256
    depth: int = 3
    emb: int = 64  # noise-embedding width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WindowMLPConfig":
        return cls(**d)


class Block(nn.Module):
    """``h + B silu((1 + s) LN(C silu(h)) + b)``, ``(s, b)`` from the noise embedding."""

    def __init__(self, hidden: int, emb: int):
        super().__init__()
        self.inner = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(emb, 2 * hidden)
        self.outer = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.outer(F.silu(self.norm(self.inner(F.silu(h))) * (1 + scale) + shift))


def window_embedding(cfg, embed: nn.Module, x: Tensor, c_noise: Tensor) -> Tensor:
    """The noise embedding ``[B, emb]`` of a batch of windows ``x`` ``[B, width, dim]``, after checking
    the window shape against the network's ``cfg`` (width, dim, emb): shared by the window networks."""
    if x.shape[1:] != (cfg.width, cfg.dim):
        raise ValueError(f"network built for windows [B, {cfg.width}, {cfg.dim}], got {tuple(x.shape)}")
    return embed(noise_embedding(c_noise.reshape(-1).expand(x.shape[0]), cfg.emb).to(x.dtype))


class WindowMLP(nn.Module):
    """``F(x [B, W, D], c_noise [B]) -> [B, W, D]``; see the module docstring."""

    def __init__(self, config: WindowMLPConfig):
        super().__init__()
        self.config = cfg = config
        n = cfg.width * cfg.dim
        self.embed = nn.Sequential(nn.Linear(cfg.emb, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))
        self.stem = nn.Linear(n, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg.hidden, cfg.emb) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.out = nn.Linear(cfg.hidden, n)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = window_embedding(self.config, self.embed, x, c_noise)
        h = self.stem(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h))).reshape(x.shape)

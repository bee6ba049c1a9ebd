r"""The network ``F`` of the smoother's window prior on a grid: the sphere U-Net over the stacked window.

Input ``x`` ``[B, W, D]`` (the scaled noised window ``c_in (z_sigma - mu)`` of ``W = 2k+1`` normalised gridded
states, ``D = C H Wlon`` values each: channels ``(variable, level)`` by latitude by longitude, flattened in
that order) and ``c_noise`` ``[B]``; output ``[B, W, D]`` (EDM's ``F``; the preconditioning is
:mod:`pipeline.smoothers.neural`). The window is read as one field of ``W C`` channels ``[B, W C, H, Wlon]``
(state ``w``'s channel ``c`` in channel ``w C + c``) and passed through :class:`~.unet.SphereUNet` with no
condition (``history = 0``): the emulator's network, with its circular longitude padding, its padding across
the poles, its latitude features and its FiLM noise embedding. Its output convolution starts at zero, so
``F = 0`` at initialisation and the window denoiser is then the posterior mean of the independent prior.

Shape: ``H`` and ``Wlon`` divisible by ``2**(len(mults)-1)``; ``Wlon`` even for ``pole="roll"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .unet import MultsDict, SphereUNet, UNetConfig


@dataclass(frozen=True)
class WindowUNetConfig(MultsDict):
    """Architecture (stored in the checkpoint metadata)."""

    width: int  # W = 2k+1 states in the window
    channels: int  # C gridded channels per state
    latitudes: int  # H
    longitudes: int  # Wlon
    base: int = 32  # the U-Net's channels at full resolution
    mults: tuple[int, ...] = (1, 2, 2)
    blocks: int = 1
    emb: int = 64
    pole: str = "roll"

    @property
    def dim(self) -> int:
        """``D = C H Wlon``: the values of one state."""
        return self.channels * self.latitudes * self.longitudes

    def unet(self) -> UNetConfig:
        """The U-Net over ``W C`` channels, unconditional."""
        return UNetConfig(channels=self.width * self.channels, history=0, base=self.base, mults=self.mults,
                          blocks=self.blocks, emb=self.emb, pole=self.pole)  # type: ignore[arg-type]


class WindowUNet(nn.Module):
    """``F(x [B, W, D], c_noise [B]) -> [B, W, D]``; see the module docstring."""

    def __init__(self, config: WindowUNetConfig):
        super().__init__()
        self.config = config
        self.unet = SphereUNet(config.unet())

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        cfg = self.config
        if x.shape[1:] != (cfg.width, cfg.dim):
            raise ValueError(f"network built for windows [B, {cfg.width}, {cfg.dim}] ({cfg.channels} channels on "
                             f"{cfg.latitudes}x{cfg.longitudes}), got {tuple(x.shape)}")
        b, shape = x.shape[0], (cfg.width * cfg.channels, cfg.latitudes, cfg.longitudes)
        f = self.unet(x.reshape(b, *shape), x.new_zeros(b, 0, *shape), c_noise)
        return f.reshape(x.shape)

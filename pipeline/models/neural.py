r"""The neural conditional denoiser: EDM preconditioning around :class:`SphereUNet`.

State space. The diffusion runs on the **normalised** state ``z = (x - mean) / std`` (per channel,
:class:`Normalisation`, stored in the checkpoint). It has to: the noise ``sigma_t eps`` of the
protocol is the same for every channel, and in physical units it would drown a temperature of
a few kelvin while leaving a geopotential of 1e5 m²/s² untouched. So ``x_t``, the condition and
the result of ``__call__`` are normalised fields; a problem that observes physical quantities
composes its observation operator with :meth:`NeuralDenoiser.to_physical` (linear, so guidance
differentiates through it) and writes ``to_physical(mean)`` and ``normalisation.scale(spread)``.

Schedules. With ``x_t = alpha_t z + sigma_t eps`` (any schedule of :mod:`..diffusion.schedules`),
``x_t / alpha_t = z + sigma eps`` with ``sigma = sigma_t / alpha_t`` is EDM's variable, so

    d(x_t, t; c) = D(x_t / alpha_t, sigma_t / alpha_t; c).

Preconditioning (Karras et al. 2022) on the increment ``y = z - b`` over the base ``b`` (the
last condition state when ``residual``, GenCast-style; zero otherwise), with per-channel
``s = sigma_data`` (``Normalisation.residual_std``, or 1):

    c_skip = s² / (sigma² + s²),   c_out = sigma s / sqrt(sigma² + s²),
    c_in   = 1 / sqrt(sigma² + s²), c_noise = log(clamp(sigma, sigma_min, sigma_max)) / 4,
    D(z_sigma, sigma; c) = b + c_skip (z_sigma - b) + c_out F(c_in (z_sigma - b), c, c_noise).

With ``F = 0`` (the zero-initialised output layer) ``D`` is the exact posterior mean of the
Gaussian prior ``N(b, s²)``; training teaches ``F`` the rest. ``c_noise`` is clamped to the range
seen in training so that ``t = 1`` of a VP schedule (sigma ~ 1e3) reads the forecast mean
``E[z^{k+1} | c]`` instead of extrapolating the embedding.

Shapes: ``x_t`` ``[B, C, H, W]``, ``t`` scalar or ``[B]``, ``condition`` ``[B, K, C, H, W]``
(``[B, C, H, W]`` accepted when ``K = 1``). Differentiable in ``x_t``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule, make_schedule
from .normalisation import Normalisation
from .unet import SphereUNet, UNetConfig

if TYPE_CHECKING:
    from .checkpoint import GridLayout


class NeuralDenoiser:
    """``E[z | x_t, c]`` from a trained :class:`SphereUNet`; implements the Denoiser protocol."""

    def __init__(self, net: nn.Module, schedule: Schedule, normalisation: Normalisation, *,
                 residual: bool = True, sigma_min: float = 1e-3, sigma_max: float = 100.0,
                 dtype: torch.dtype | None = None, compile: bool = False, meta: dict | None = None):
        self.net = net
        self.schedule = schedule
        self.normalisation = normalisation
        self.residual = residual
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.autocast_dtype = dtype  # e.g. torch.bfloat16: run the network under autocast
        self.meta = meta or {}
        self._forward = torch.compile(net) if compile else net

    @property
    def history(self) -> int:
        return int(getattr(self.net, "config", UNetConfig(channels=1)).history)

    # -- the protocol -------------------------------------------------------------------------
    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        """``d(x_t, t; c) = D(x_t / alpha_t, sigma_t / alpha_t; c)``: ``[B, C, H, W]``."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        alpha, sigma_t = self.schedule(expand_time(t, x_t))
        sigma = (sigma_t / alpha).expand(x_t.shape[0], *([1] * (x_t.ndim - 1)))
        return self.edm(x_t / alpha, sigma.reshape(x_t.shape[0]), condition)

    # -- EDM form -----------------------------------------------------------------------------
    def coefficients(self, sigma: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` ``[B, C, 1, 1]`` and ``c_noise`` ``[B]`` for ``sigma`` ``[B]``."""
        s = self.normalisation.sigma_data(like)[None]  # [1, C, 1, 1]
        sig = sigma.to(like.dtype).reshape(-1, 1, 1, 1)
        var = sig**2 + s**2
        c_skip = s**2 / var
        c_out = sig * s / var.sqrt()
        c_in = 1 / var.sqrt()
        c_noise = sigma.to(like.dtype).clamp(self.sigma_min, self.sigma_max).log() / 4
        return c_skip, c_out, c_in, c_noise

    def edm(self, z_sigma: Tensor, sigma: Tensor, condition: Tensor) -> Tensor:
        """``D(z + sigma eps, sigma; c)`` with ``z_sigma`` ``[B, C, H, W]``, ``sigma`` ``[B]``."""
        if condition.ndim == z_sigma.ndim:
            condition = condition[:, None]
        if condition.shape[0] != z_sigma.shape[0] and condition.shape[0] == 1:
            condition = condition.expand(z_sigma.shape[0], *condition.shape[1:])
        base = condition[:, -1] if self.residual else torch.zeros_like(z_sigma)
        y = z_sigma - base
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.expand(z_sigma.shape[0]), z_sigma)
        f = self._network(c_in * y, condition, c_noise)
        return base + c_skip * y + c_out * f

    def _network(self, x: Tensor, condition: Tensor, c_noise: Tensor) -> Tensor:
        p = next(self.net.parameters())
        device_type = p.device.type
        ctx = (torch.autocast(device_type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            out = self._forward(x.to(p.dtype), condition.to(p.dtype), c_noise.to(p.dtype))
        return out.to(x.dtype)

    # -- units --------------------------------------------------------------------------------
    def to_physical(self, z: Tensor) -> Tensor:
        """``mean + std z`` on ``[..., C, H, W]``."""
        return self.normalisation.denormalise(z)

    def from_physical(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` on ``[..., C, H, W]``."""
        return self.normalisation.normalise(x)

    # -- construction -------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "NeuralDenoiser":
        self.net.to(device)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, schedule: Schedule | None = None, *,
                        device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                        compile: bool = False, layout: "GridLayout | None" = None) -> "NeuralDenoiser":
        """Load ``path`` (a checkpoint directory); ``schedule`` defaults to the stored one.

        With ``layout`` (the inputs' channels and grid), refuse a checkpoint that does not fit
        them (:func:`~.checkpoint.check_compatible`, an ``InputError`` naming the difference).
        """
        from .checkpoint import check_compatible, load_checkpoint, read_meta

        if layout is not None:
            check_compatible(read_meta(path), layout)
        net, meta = load_checkpoint(path, device=device)
        if schedule is None:
            sched = meta.get("schedule") or {"kind": "edm", "params": {}}
            schedule = make_schedule(sched["kind"], **sched.get("params", {}))
        pre = meta.get("preconditioning", {})
        return cls(net, schedule, Normalisation.from_dict(meta["normalisation"]),
                   residual=bool(pre.get("residual", True)), sigma_min=float(pre.get("sigma_min", 1e-3)),
                   sigma_max=float(pre.get("sigma_max", 100.0)), dtype=dtype, compile=compile, meta=meta)


def build_network(config: UNetConfig) -> SphereUNet:
    return SphereUNet(config)

r"""The trained window denoiser (``model=neural`` in ``diffda smooth``): EDM preconditioning around a window network.

The network ``F`` is :class:`~pipeline.models.window_mlp.WindowMLP` (``window-mlp``: any twin) or
:class:`~pipeline.models.window_conv.WindowConv` (``window-conv``: a ring's components, Lorenz-96 and the
linear twin, whose ``mu`` and ``s`` are then pooled over the components so that ``D`` commutes with the
ring's rotations too).

The window ``x`` ``[W, D]`` of ``W = 2k+1`` consecutive twin states is in physical units (the smoother's
space: observations and operators act on it); ``mu`` and ``s`` ``[D]`` are the per-component mean and std of
the training trajectory, the same at every position of the window (the chain is stationary). With
``x_sigma = x + sigma eps`` and ``sigma = sigma_t / alpha_t`` (any schedule: ``d(x_t, t) = D(x_t / alpha_t,
sigma_t / alpha_t)``), per component and broadcast over the window,

    c_skip = s² / (sigma² + s²),   c_out = sigma s / sqrt(sigma² + s²),   c_in = 1 / sqrt(sigma² + s²),
    c_noise = log(clamp(sigma / s_bar, sigma_min, sigma_max)) / 4,   s_bar = sqrt(mean(s²)),
    D(x_sigma, sigma) = mu + c_skip (x_sigma - mu) + c_out F(c_in (x_sigma - mu), c_noise).

With ``F = 0`` (the network at initialisation) ``D`` is the exact posterior mean under the independent prior
``N(mu, diag(s²))``; training teaches ``F`` the rest (the correlations across the window and between
components, the attractor's shape). Noise levels are in units of ``s_bar``: training draws ``sigma / s_bar``
from EDM's distribution for unit-variance data (:mod:`.train_window`). ``variance``: ``c_out²``, the
posterior variance of that independent prior (MMPS ``covariance=diagonal``); ``covariance=jacobian``
differentiates through the network.

Shapes: ``x_t`` ``[B, W, D]``, ``t`` scalar or ``[B]``, condition ignored (``[B, 0]``); result ``[B, W, D]``.
On a grid (``window-unet``, :class:`~pipeline.models.window_unet.WindowUNet`: the sphere U-Net over the window's
``W C`` stacked channels) the window holds ``W`` gridded states ``[C, H, Wlon]`` flattened to ``D = C H Wlon``,
**normalised** by the checkpoint's per-channel mean and std (the emulator's normalisation, from the training
store): the smoother's space is then the gridded filter's (:mod:`pipeline.data.gridded`), and ``mu = 0``,
``s = 1`` (``s_bar = 1``), so ``F = 0`` gives ``D = x_sigma / (1 + sigma²)``, the posterior mean of
``N(mean_c, std_c²)`` in physical units.

Checkpoint (:mod:`pipeline.models.network_checkpoint`): ``architecture.kind`` one of ``WINDOW_KINDS``, ``window``
(``half_width`` k, ``width`` W, ``dim`` D), ``normalisation`` (``mean``, ``std``), ``system`` (the twin's
preset and dynamics keys, :func:`pipeline.data.twins.system_of`); :func:`check_meta` refuses one whose
width, dimension or system differ from the run, before the weights are read. A ``window-unet`` holds the emulator's
``channels``, ``grid`` and ``normalisation`` instead of ``system`` (:func:`make_grid_meta`); :func:`check_grid_meta`
refuses one whose width, channels or grid differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import ConfigError
from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule
from ..errors import InputError
from ..models.network_checkpoint import (FORMAT, GRID_WINDOW_KINDS, WINDOW_KINDS, GridLayout, check_compatible,
                                         grid_meta, kind_of, load_checkpoint, read_meta)
from ..models.normalisation import Normalisation
from ..models.window_conv import WindowConvConfig
from ..models.window_mlp import WindowMLPConfig
from ..models.window_unet import WindowUNetConfig


class NeuralWindowDenoiser:
    """``E[x | x_t]`` of a window from a trained window network; the Denoiser protocol."""

    def __init__(self, net: nn.Module, schedule: Schedule | None, mean: Tensor, std: Tensor, k: int,
                 sigma_min: float = 1e-3, sigma_max: float = 100.0):
        """``schedule`` None: only the EDM form (:meth:`edm`, :meth:`coefficients`) is used (training)."""
        self.net, self.schedule, self.k = net, schedule, k
        self.width, self.dim = 2 * k + 1, mean.shape[0]
        self.mean, self.std = mean.double(), std.double()  # mu, s [D]
        self.s_bar = float((self.std**2).mean().sqrt())
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        """``D(x_t / alpha_t, sigma_t / alpha_t)``: ``[B, W, D]``."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        alpha, sigma_t = self.schedule(expand_time(t, x_t))
        sigma = (sigma_t / alpha).expand(x_t.shape[0], *([1] * (x_t.ndim - 1)))
        return self.edm(x_t / alpha, sigma.reshape(x_t.shape[0]), condition)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``c_out² = s² sigma² / (s² + sigma²)`` ``[B, 1, D]``, ``sigma = sigma_t / alpha_t``."""
        alpha, sigma_t = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        _, c_out, _, _ = self.coefficients((sigma_t / alpha).reshape(-1).expand(x_t.shape[0]), x_t)
        return c_out**2

    def coefficients(self, sigma: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` ``[B, 1, D]`` and ``c_noise`` ``[B]`` for ``sigma`` ``[B]``."""
        s = self.std.to(like)[None, None]
        sig = sigma.to(like.dtype).reshape(-1, 1, 1)
        var = sig**2 + s**2
        c_noise = (sigma.to(like.dtype) / self.s_bar).clamp(self.sigma_min, self.sigma_max).log() / 4
        return s**2 / var, sig * s / var.sqrt(), 1 / var.sqrt(), c_noise

    def edm(self, x_sigma: Tensor, sigma: Tensor, condition: Tensor | None = None) -> Tensor:
        """``D(x + sigma eps, sigma)`` with ``x_sigma`` ``[B, W, D]``, ``sigma`` ``[B]``."""
        mu = self.mean.to(x_sigma)[None, None]
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.expand(x_sigma.shape[0]), x_sigma)
        p = next(self.net.parameters())
        f = self.net((c_in * (x_sigma - mu)).to(p.dtype), c_noise.to(p.dtype)).to(x_sigma.dtype)
        return mu + c_skip * (x_sigma - mu) + c_out * f

    @classmethod
    def from_checkpoint(cls, path: str | Path, schedule: Schedule | None, k: int,
                        data: "dict | GridLayout") -> "NeuralWindowDenoiser":
        """Load ``path`` after the checks against the run: on a twin ``data`` is its ``system`` (with its
        ``dim``, :func:`check_meta`), on a grid the inputs' :class:`GridLayout` (:func:`check_grid_meta`); a
        checkpoint of the other family is refused by its ``architecture.kind``. On a grid the window is in
        the checkpoint's normalised units, ``mu = 0`` and ``s = 1``."""
        grid = isinstance(data, GridLayout)
        meta = read_meta(path, kind=GRID_WINDOW_KINDS if grid else WINDOW_KINDS)
        (check_grid_meta if grid else check_meta)(meta, path, k, data)  # type: ignore[operator]
        net, meta = load_checkpoint(path)
        norm, pre = meta["normalisation"], meta["preconditioning"]
        dim = meta["window"]["dim"]
        mean, std = (torch.zeros(dim), torch.ones(dim)) if grid else (torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
        return cls(net, schedule, mean, std, k, float(pre["sigma_min"]), float(pre["sigma_max"]))


def _meta(config: WindowMLPConfig | WindowConvConfig | WindowUNetConfig, k: int, entries: dict, step: int,
          sigma_min: float, sigma_max: float, training: dict | None) -> dict:
    """The ``meta.json`` dictionary of a window network, ``entries`` its data's (plain JSON types)."""
    return {
        "format": FORMAT,
        "software": {"diffda": __version__, "torch": torch.__version__},
        "architecture": {"kind": kind_of(config), **config.to_dict()},
        "window": {"half_width": k, "width": 2 * k + 1, "dim": config.dim},
        **entries,
        "preconditioning": {"sigma_min": sigma_min, "sigma_max": sigma_max},
        "training": {"step": step, **(training or {})},
    }


def make_meta(config: WindowMLPConfig | WindowConvConfig, k: int, mean: Tensor, std: Tensor, system: dict, *, step: int = 0,
              sigma_min: float = 1e-3, sigma_max: float = 100.0, training: dict | None = None) -> dict:
    """The ``meta.json`` dictionary of a twin's window network (plain JSON types)."""
    entries = {"normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
               "system": dict(system)}
    return _meta(config, k, entries, step, sigma_min, sigma_max, training)


def make_grid_meta(config: WindowUNetConfig, k: int, layout: GridLayout, normalisation: Normalisation, *,
                   step: int = 0, sigma_min: float = 1e-3, sigma_max: float = 100.0,
                   training: dict | None = None) -> dict:
    """The ``meta.json`` dictionary of a grid's window U-Net: ``window`` and the emulator's ``channels``,
    ``variables``, ``levels``, ``grid`` and ``normalisation`` (per channel, physical units)."""
    return _meta(config, k, grid_meta(layout, normalisation), step, sigma_min, sigma_max, training)


def check_width(meta: dict, path: str | Path, k: int) -> None:
    """Refuse a window network of another width than ``2k+1`` (``smoother.window_half_width``)."""
    window, kind = meta["window"], meta["architecture"]["kind"]
    if window["width"] != 2 * k + 1:
        raise ConfigError(f"model.checkpoint={path} spans {window['width']} states (k = {window['half_width']}) but "
                          f"smoother.window_half_width={k} needs 2k+1 = {2 * k + 1}; set "
                          f"smoother.window_half_width={window['half_width']} or train one with "
                          f"`diffda train --set kind={kind} --set window_half_width={k}`")


def check_meta(meta: dict, path: str | Path, k: int, system: dict) -> None:
    """Refuse a window network of another width (``smoother.window_half_width``), dimension or system."""
    check_width(meta, path, k)
    window, trained = meta["window"], meta["system"]
    if window["dim"] != system["dim"]:
        raise InputError(f"model.checkpoint={path} models states of {window['dim']} components but the data's "
                         f"state 'x' has {system['dim']} (the {system['preset']} preset's dim)")
    differ = [f"{key}={trained.get(key)!r} (data: {value!r})" for key, value in system.items() if trained.get(key) != value]
    if differ:
        raise InputError(f"model.checkpoint={path} was trained on another system than the data's: "
                         f"{', '.join(differ)}; train it on a trajectory of this system (diffda make-data "
                         f"{system['preset']} with the same keys)")


def check_grid_meta(meta: dict, path: str | Path, k: int, layout: GridLayout) -> None:
    """Refuse a grid's window network of another width, or whose channels or grid differ from ``layout``'s
    (:func:`~pipeline.models.network_checkpoint.check_compatible`, the message prefixed by ``model.checkpoint``)."""
    check_width(meta, path, k)
    try:
        check_compatible(meta, layout)
    except InputError as e:
        raise InputError(f"model.checkpoint={path}: {e}") from None

r"""Training the smoother's window network (``diffda train --set kind=window-mlp|window-conv|window-unet``).

Networks. ``kind=window-mlp``: :class:`~pipeline.models.window_mlp.WindowMLP` (``hidden`` units, ``depth``
blocks), any twin. ``kind=window-conv``: :class:`~pipeline.models.window_conv.WindowConv` (``hidden``
channels, ``depth`` blocks, ``kernel`` taps) over the components of a ring (``RINGS``: Lorenz-96, the
linear twin); refused on Lorenz-63, whose three components are no ring. ``kind=window-unet``:
:class:`~pipeline.models.window_unet.WindowUNet` (the emulator's U-Net options ``base``, ``mults``, ``blocks``,
``emb``, ``pole``) on a gridded store (``diffda make-data sphere``, ERA5 layout; ``variables``/``levels``
select the channels, as for the emulator).

Gridded samples. The store's fields ``[T, C, H, Wlon]`` are normalised per channel by the mean and std of the
training times (the emulator's :class:`~pipeline.models.normalisation.Normalisation`, no residual), flattened
to ``D = C H Wlon`` and windowed like a twin's; ``mu = 0``, ``s = 1``. The checkpoint holds the normalisation,
channels and grid (:func:`.neural.make_grid_meta`).

Samples. A twin's ``truth.zarr`` (``x`` over ``(time, component)``; long ones from ``diffda make-data PRESET
--set cycles=N``) holds one run of the ergodic chain; its first ``1 - val_fraction`` of the times give the
``T - 2k`` overlapping windows ``x_{j..j+2k}`` ``[W, D]``, ``W = 2k+1`` (a batch draws their starts), and the mean ``mu`` and std ``s``
``[D]`` of the preconditioning (:mod:`.neural`): per component, or for ``window-conv`` pooled over the
components (``mu_d = mean over times and components``, ``s_d² = mean of (x - mu)²``: the ring is stationary
in space as well, and a per-component scaling would break the network's rotation symmetry).

Loss: the emulator's EDM loss (:func:`pipeline.models.train.edm_loss`), ``E[|(D(x + sigma eps, sigma) - x) /
c_out|²]``, with ``sigma = s_bar sigma'``, ``sigma'`` EDM's noise distribution for unit-variance data
(:func:`pipeline.models.train.sample_sigma`). The loop is the emulator's (:func:`pipeline.models.train.fit`):
checkpoints every ``checkpoint_every`` steps, resumed bit for bit, EMA weights in ``model.safetensors``.

Held-out check. On (at most ``HELD_OUT_WINDOWS``, on a grid ``HELD_OUT_GRID_WINDOWS``) windows of the last ``val_fraction`` of the times, the RMSE of ``D(x + sigma eps, sigma)``
against ``x`` at each ``sigma / s_bar`` of ``HELD_OUT_SIGMAS``, for the network and for ``F = 0`` (the
independent prior ``N(mu, diag s²)`` the preconditioning starts from): what training added, in
``meta.json``'s ``training.denoising``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..models.network_checkpoint import kind_of
from ..models.train import Progress, TrainOptions, edm_loss, fit, init_network, sample_sigma
from ..models.window_conv import WindowConvConfig
from ..models.window_mlp import WindowMLPConfig
from ..models.window_unet import WindowUNetConfig
from .neural import NeuralWindowDenoiser, make_grid_meta, make_meta

HELD_OUT_SIGMAS = (0.1, 0.3, 1.0, 3.0)  # sigma / s_bar
HELD_OUT_WINDOWS = 4096
HELD_OUT_GRID_WINDOWS = 256  # window-unet: a U-Net pass over 2k+1 gridded states costs far more than an MLP's
RINGS = ("linear", "lorenz96")  # twins whose components lie on a ring (window-conv)


def window_config(opts: TrainOptions, width: int, dim: int) -> WindowMLPConfig | WindowConvConfig:
    """The architecture of ``opts.kind`` for windows ``[width, dim]``."""
    if opts.kind == "window-conv":
        return WindowConvConfig(width=width, dim=dim, channels=opts.hidden, depth=opts.depth, kernel=opts.kernel,
                                emb=opts.emb)
    return WindowMLPConfig(width=width, dim=dim, hidden=opts.hidden, depth=opts.depth, emb=opts.emb)


def normalisation(x: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """``(mu, s)`` ``[D]`` of ``x`` ``[T, D]``: per component, pooled over the components for ``window-conv``."""
    if kind == "window-conv":
        mu = x.mean()
        return mu.expand(x.shape[1]).clone(), ((x - mu) ** 2).mean().sqrt().clamp_min(1e-12).expand(x.shape[1]).clone()
    return x.mean(0), x.std(0).clamp_min(1e-12)


class WindowTask:
    """The window network (``kind=window-mlp``, ``window-conv`` or ``window-unet``) for
    :func:`pipeline.models.train.fit`: windows of ``2k+1`` consecutive states of ``trajectory`` ``[T, D]``
    (drawn by their start, never all cut at once), preconditioned by ``mean`` and ``std`` ``[D]``;
    ``meta(step=, sigma_min=, sigma_max=, training=)`` gives the checkpoint's ``meta.json`` (:func:`.neural.make_meta`
    or :func:`.neural.make_grid_meta` with the data's arguments bound)."""

    def __init__(self, trajectory: Tensor, k: int, mean: Tensor, std: Tensor,
                 config: WindowMLPConfig | WindowConvConfig | WindowUNetConfig,
                 meta: Callable[..., dict], opts: TrainOptions):
        self.trajectory, self.k, self.mean, self.std, self.opts = trajectory, k, mean, std, opts
        self.config, self._meta = config, meta
        self.kind = kind_of(config)
        self.architecture = config.to_dict()

    def network(self, seed: int) -> nn.Module:
        return init_network(self.config, seed)

    def bind(self, model: nn.Module, device: torch.device) -> None:
        self.samples = self.trajectory.to(device=device, dtype=torch.float32)
        self.offsets = torch.arange(2 * self.k + 1, device=device)
        self.denoiser = NeuralWindowDenoiser(model, None, self.mean, self.std, self.k, self.opts.sigma_min,
                                             self.opts.sigma_max)

    def loss(self, g: torch.Generator, device: torch.device) -> Tensor:
        b = self.opts.batch_size
        start = torch.randint(len(self.samples) - 2 * self.k, (b,), generator=g).to(device)
        x = self.samples[start[:, None] + self.offsets]  # [B, W, D]
        sigma = self.denoiser.s_bar * sample_sigma(b, self.opts, g).to(device)
        eps = torch.randn(x.shape, generator=g).to(device)
        return edm_loss(self.denoiser, x.new_zeros(b, 0), x, sigma, eps)

    def meta(self, step: int, training: dict) -> dict:
        return self._meta(step=step, sigma_min=self.opts.sigma_min, sigma_max=self.opts.sigma_max, training=training)


def read_twin(path: str | Path) -> tuple[Tensor, str, dict[str, Any]]:
    """The trajectory ``[T, D]`` (float64) of a twin store, its preset and parameters (:func:`params_of`)."""
    import xarray as xr

    from ..data.twins import params_of
    from ..models.store import resolve_store

    store = resolve_store(path)
    ds = xr.open_zarr(store)
    if "x" not in ds or ds["x"].dims != ("time", "component") or "preset" not in ds.attrs:
        raise InputError(f"{store} is not a twin trajectory (x over (time, component) with a preset attribute); "
                         f"make one with `diffda make-data lorenz63 --out DIR --set cycles=20000`, or train on "
                         f"gridded fields with --set kind=window-unet")
    x = torch.from_numpy(ds["x"].values).double()
    if not torch.isfinite(x).all():
        raise InputError(f"{store} holds non-finite states; remake it with diffda make-data")
    return x, str(ds.attrs["preset"]), params_of(dict(ds.attrs))


def held_out_errors(den: NeuralWindowDenoiser, trajectory: Tensor, k: int, seed: int,
                    count: int = HELD_OUT_WINDOWS) -> dict[str, list[float]]:
    """RMSE of the network's and of the independent prior's ``D(x + sigma eps, sigma)`` against ``x`` over (at
    most) ``count`` windows of ``trajectory`` ``[T, D]``, drawn without replacement."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randperm(trajectory.shape[0] - 2 * k, generator=g)[:count]
    x = trajectory[start[:, None] + torch.arange(2 * k + 1)].double()  # [n, W, D]
    mu = den.mean[None, None]
    out: dict[str, list[float]] = {"sigma": list(HELD_OUT_SIGMAS), "rmse_network": [], "rmse_independent": []}
    for s in HELD_OUT_SIGMAS:
        sigma = torch.full((len(x),), s * den.s_bar, dtype=x.dtype)
        x_sigma = x + sigma[:, None, None] * torch.randn(x.shape, generator=g, dtype=x.dtype)
        with torch.no_grad():
            d = den.edm(x_sigma, sigma)
        c_skip = den.coefficients(sigma, x)[0]
        out["rmse_network"].append(float(((d - x) ** 2).mean().sqrt()))
        out["rmse_independent"].append(float(((mu + c_skip * (x_sigma - mu) - x) ** 2).mean().sqrt()))
    return out


def split(x: Tensor, opts: TrainOptions, store_path: str | Path) -> tuple[Tensor, Tensor]:
    """The first ``1 - val_fraction`` of the times of ``x`` ``[T, ...]`` (training) and the rest (held out);
    refused when training gets fewer than ``2k+1`` times."""
    k = opts.window_half_width
    n_val = int(round(opts.val_fraction * x.shape[0]))
    train_part, val_part = x[: x.shape[0] - n_val], x[x.shape[0] - n_val:]
    if train_part.shape[0] < 2 * k + 1:
        raise InputError(f"window_half_width={k} needs at least 2k+1 = {2 * k + 1} training times; {store_path} "
                         f"gives {train_part.shape[0]}: make longer data (diffda make-data ... --set cycles=N)")
    return train_part, val_part


def twin_inputs(store_path: str | Path, opts: TrainOptions):
    """``(train [T, D], held out, mean, std, config, meta, system)`` of a twin store (``window-mlp``, ``window-conv``)."""
    from ..data.twins import system_of

    x, preset, params = read_twin(store_path)
    if opts.kind == "window-conv" and preset not in RINGS:
        raise InputError(f"kind=window-conv convolves over a ring of components ({', '.join(RINGS)}); {store_path} "
                         f"holds a {preset} trajectory, whose components are no ring: use --set kind=window-mlp")
    if opts.kind == "window-conv" and opts.kernel // 2 > x.shape[1]:
        raise InputError(f"kernel={opts.kernel} spans more than the ring of {x.shape[1]} components of {store_path}; "
                         f"set kernel to at most {2 * x.shape[1] + 1}")
    train_part, val_part = split(x, opts, store_path)
    mean, std = normalisation(train_part, opts.kind)
    system = system_of(preset, params)
    config = window_config(opts, 2 * opts.window_half_width + 1, x.shape[1])
    return (train_part, val_part, mean, std, config,
            partial(make_meta, config, opts.window_half_width, mean, std, system), system)


def grid_inputs(store_path: str | Path, opts: TrainOptions):
    """``(train [T, D], held out, mean, std, config, meta, layout)`` of a gridded store (``window-unet``): the
    fields ``[T, C, H, Wlon]`` normalised per channel by the training part's mean and std, flattened to
    ``D = C H Wlon``; ``mu = 0``, ``s = 1`` (:mod:`.neural`)."""
    from ..models.normalisation import Normalisation
    from ..models.train import _refuse_twin, read_store

    _refuse_twin(store_path)
    fields, layout = read_store(store_path, opts.variables, opts.levels)  # physical [T, C, H, Wlon]
    c, h, w = layout.shape
    factor = 2 ** (len(opts.mults) - 1)
    if h % factor or w % factor:
        raise InputError(f"mults={list(opts.mults)} halves the grid {len(opts.mults) - 1} times but {store_path}'s "
                         f"{w}x{h} grid is not divisible by {factor}; use fewer mults")
    train_part, val_part = split(fields, opts, store_path)
    norm = Normalisation.from_trajectory(train_part, residual=False)
    train_part, val_part = (norm.normalise(part.double()).float().flatten(1) for part in (train_part, val_part))
    config = WindowUNetConfig(width=2 * opts.window_half_width + 1, channels=c, latitudes=h, longitudes=w,
                              base=opts.base, mults=opts.mults, blocks=opts.blocks, emb=opts.emb, pole=opts.pole)
    return (train_part, val_part, torch.zeros(config.dim), torch.ones(config.dim), config,
            partial(make_grid_meta, config, opts.window_half_width, layout, norm), layout)


def train_window_from_store(store_path: str | Path, out_dir: str | Path, opts: TrainOptions,
                            progress: Progress | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train the window network on a twin store (``window-mlp``, ``window-conv``) or a gridded store
    (``window-unet``), the first ``1 - val_fraction`` of its times, check it on the rest, and return a summary
    (the check also in ``meta.json``)."""
    import json

    from ..data.atomic import write_file
    from ..models.network_checkpoint import FILE_MODE, GRID_WINDOW_KINDS, META, read_meta
    from ..models.train import _rank_world

    grid = opts.kind in GRID_WINDOW_KINDS
    train_part, val_part, mean, std, config, meta_of, data = (grid_inputs if grid else twin_inputs)(store_path, opts)
    k = opts.window_half_width
    result = fit(WindowTask(train_part, k, mean, std, config, meta_of, opts), out_dir, opts, progress, stop_at)
    losses = result.losses[-50:]
    summary: dict[str, Any] = {"step": result.step, "seconds": result.seconds, "train_times": int(train_part.shape[0]),
                               "val_times": int(val_part.shape[0]),
                               "final_loss": sum(losses) / len(losses) if losses else None}
    rank, _ = _rank_world()
    if rank == 0 and val_part.shape[0] >= 2 * k + 1:
        den = NeuralWindowDenoiser.from_checkpoint(out_dir, None, k, data)
        summary["denoising"] = held_out_errors(den, val_part, k, opts.seed,
                                               HELD_OUT_GRID_WINDOWS if grid else HELD_OUT_WINDOWS)
        meta = read_meta(out_dir)
        meta["training"]["denoising"] = summary["denoising"]
        write_file(Path(out_dir) / META, lambda p: p.write_text(json.dumps(meta, indent=1)), FILE_MODE)
    return summary

r"""Training the smoother's window network (``diffda train --set kind=window-mlp|window-conv``) on a twin.

Networks. ``kind=window-mlp``: :class:`~pipeline.models.window_mlp.WindowMLP` (``hidden`` units, ``depth``
blocks), any twin. ``kind=window-conv``: :class:`~pipeline.models.window_conv.WindowConv` (``hidden``
channels, ``depth`` blocks, ``kernel`` taps) over the components of a ring (``RINGS``: Lorenz-96, the
linear twin); refused on Lorenz-63, whose three components are no ring.

Samples. A twin's ``truth.zarr`` (``x`` over ``(time, component)``; long ones from ``diffda make-data PRESET
--set cycles=N``) holds one run of the ergodic chain; its first ``1 - val_fraction`` of the times give the
``T - 2k`` overlapping windows ``x_{j..j+2k}`` ``[W, D]``, ``W = 2k+1``, and the mean ``mu`` and std ``s``
``[D]`` of the preconditioning (:mod:`.neural`): per component, or for ``window-conv`` pooled over the
components (``mu_d = mean over times and components``, ``s_d² = mean of (x - mu)²``: the ring is stationary
in space as well, and a per-component scaling would break the network's rotation symmetry).

Loss: the emulator's EDM loss (:func:`pipeline.models.train.edm_loss`), ``E[|(D(x + sigma eps, sigma) - x) /
c_out|²]``, with ``sigma = s_bar sigma'``, ``sigma'`` EDM's noise distribution for unit-variance data
(:func:`pipeline.models.train.sample_sigma`). The loop is the emulator's (:func:`pipeline.models.train.fit`):
checkpoints every ``checkpoint_every`` steps, resumed bit for bit, EMA weights in ``model.safetensors``.

Held-out check. On the windows of the last ``val_fraction`` of the times, the RMSE of ``D(x + sigma eps, sigma)``
against ``x`` at each ``sigma / s_bar`` of ``HELD_OUT_SIGMAS``, for the network and for ``F = 0`` (the
independent prior ``N(mu, diag s²)`` the preconditioning starts from): what training added, in
``meta.json``'s ``training.denoising``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..models.train import Progress, TrainOptions, edm_loss, fit, init_network, sample_sigma
from ..models.window_conv import WindowConvConfig
from ..models.window_mlp import WindowMLPConfig
from .neural import NeuralWindowDenoiser, make_meta

HELD_OUT_SIGMAS = (0.1, 0.3, 1.0, 3.0)  # sigma / s_bar
HELD_OUT_WINDOWS = 4096
RINGS = ("linear", "lorenz96")  # twins whose components lie on a ring (window-conv)


def cut_windows(x: Tensor, k: int) -> Tensor:
    """All ``T - 2k`` windows of ``2k+1`` consecutive states of ``x`` ``[T, D]``: ``[T - 2k, 2k+1, D]``."""
    return x.unfold(0, 2 * k + 1, 1).permute(0, 2, 1).contiguous()


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
    """The window network (``kind=window-mlp`` or ``window-conv``) for :func:`pipeline.models.train.fit`."""

    def __init__(self, windows: Tensor, mean: Tensor, std: Tensor, system: dict, opts: TrainOptions):
        self.windows, self.mean, self.std, self.system, self.opts = windows, mean, std, system, opts
        self.k = (windows.shape[1] - 1) // 2
        self.kind = opts.kind
        self.config = window_config(opts, windows.shape[1], windows.shape[2])
        self.architecture = self.config.to_dict()

    def network(self, seed: int) -> nn.Module:
        return init_network(self.config, seed)

    def bind(self, model: nn.Module, device: torch.device) -> None:
        self.samples = self.windows.to(device=device, dtype=torch.float32)
        self.denoiser = NeuralWindowDenoiser(model, None, self.mean, self.std, self.k, self.opts.sigma_min,
                                             self.opts.sigma_max)

    def loss(self, g: torch.Generator, device: torch.device) -> Tensor:
        b = self.opts.batch_size
        x = self.samples[torch.randint(len(self.samples), (b,), generator=g).to(device)]
        sigma = self.denoiser.s_bar * sample_sigma(b, self.opts, g).to(device)
        eps = torch.randn(x.shape, generator=g).to(device)
        return edm_loss(self.denoiser, x.new_zeros(b, 0), x, sigma, eps)

    def meta(self, step: int, training: dict) -> dict:
        return make_meta(self.config, self.k, self.mean, self.std, self.system, step=step,
                         sigma_min=self.opts.sigma_min, sigma_max=self.opts.sigma_max, training=training)


def read_twin(path: str | Path) -> tuple[Tensor, str, dict[str, Any]]:
    """The trajectory ``[T, D]`` (float64) of a twin store, its preset and parameters (:func:`params_of`)."""
    import xarray as xr

    from ..data.twins import params_of
    from ..models.store import resolve_store

    store = resolve_store(path)
    ds = xr.open_zarr(store)
    if "x" not in ds or ds["x"].dims != ("time", "component") or "preset" not in ds.attrs:
        raise InputError(f"{store} is not a twin trajectory (x over (time, component) with a preset attribute); "
                         f"make one with `diffda make-data lorenz63 --out DIR --set cycles=20000`")
    x = torch.from_numpy(ds["x"].values).double()
    if not torch.isfinite(x).all():
        raise InputError(f"{store} holds non-finite states; remake it with diffda make-data")
    return x, str(ds.attrs["preset"]), params_of(dict(ds.attrs))


def held_out_errors(den: NeuralWindowDenoiser, windows: Tensor, seed: int) -> dict[str, list[float]]:
    """RMSE of the network's and of the independent prior's ``D(x + sigma eps, sigma)`` against ``x``."""
    g = torch.Generator().manual_seed(seed)
    x = windows[torch.randperm(len(windows), generator=g)[:HELD_OUT_WINDOWS]].double()
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


def train_window_from_store(store_path: str | Path, out_dir: str | Path, opts: TrainOptions,
                            progress: Progress | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train the window network on a twin store (the first ``1 - val_fraction`` of its times), check it on
    the rest, and return a summary (the check also in ``meta.json``)."""
    import json

    from ..data.atomic import write_file
    from ..data.twins import system_of
    from ..models.network_checkpoint import FILE_MODE, META, read_meta
    from ..models.train import _rank_world

    x, preset, params = read_twin(store_path)
    if opts.kind == "window-conv" and preset not in RINGS:
        raise InputError(f"kind=window-conv convolves over a ring of components ({', '.join(RINGS)}); {store_path} "
                         f"holds a {preset} trajectory, whose components are no ring: use --set kind=window-mlp")
    if opts.kind == "window-conv" and opts.kernel // 2 > x.shape[1]:
        raise InputError(f"kernel={opts.kernel} spans more than the ring of {x.shape[1]} components of {store_path}; "
                         f"set kernel to at most {2 * x.shape[1] + 1}")
    k = opts.window_half_width
    n_val = int(round(opts.val_fraction * x.shape[0]))
    train_part, val_part = x[: x.shape[0] - n_val], x[x.shape[0] - n_val:]
    if train_part.shape[0] < 2 * k + 1:
        raise InputError(f"window_half_width={k} needs at least 2k+1 = {2 * k + 1} training times; {store_path} "
                         f"gives {train_part.shape[0]}: make longer data (diffda make-data ... --set cycles=N)")
    mean, std = normalisation(train_part, opts.kind)
    system = system_of(preset, params)
    result = fit(WindowTask(cut_windows(train_part, k), mean, std, system, opts), out_dir, opts, progress, stop_at)
    losses = result.losses[-50:]
    summary: dict[str, Any] = {"step": result.step, "seconds": result.seconds, "train_times": int(train_part.shape[0]),
                               "val_times": int(n_val), "final_loss": sum(losses) / len(losses) if losses else None}
    rank, _ = _rank_world()
    if rank == 0 and val_part.shape[0] >= 2 * k + 1:
        den = NeuralWindowDenoiser.from_checkpoint(out_dir, None, k, system)
        summary["denoising"] = held_out_errors(den, cut_windows(val_part, k), opts.seed)
        meta = read_meta(out_dir)
        meta["training"]["denoising"] = summary["denoising"]
        write_file(Path(out_dir) / META, lambda p: p.write_text(json.dumps(meta, indent=1)), FILE_MODE)
    return summary

r"""One smoothing window: twin or gridded inputs -> S trajectory samples -> ``analysis.zarr``, ``metrics.json``, a PNG.

The window is the filter's (``run.start``, ``run.cycles``): the ``L`` observation times
``start+1 .. start+L``. Every rank samples its shard of the ``S = smoother.samples`` trajectories
(sample ``s`` from its own Philox stream, :mod:`pipeline.rng`, so the result does not depend on the
rank count); rank 0 gathers them in sample order and writes

- ``analysis.zarr`` in the filter's layout: the posterior mean ``x`` and ``x_spread`` over
  ``(time, component)``, ``x_members`` with ``run.members``, per-time ``rmse_analysis``,
  ``spread_analysis``, ``crps_analysis``;
- ``metrics.json``: their means over the window, wall and denoiser seconds, and on the linear twin
  the oracle: the Rauch–Tung–Striebel smoother's RMSE and the mean distance of the smoothed mean
  from the RTS mean in RTS posterior standard deviations (``oracle_error``);
- ``smooth.png``: truth, observations, smoothed mean +- 2 spread (and RTS) for the first components.

On gridded data (``data.preset`` sphere or era5; :mod:`.grid`) the states are the gridded filter's normalised
``[C, H, W]`` flattened to ``D = C H W``, the window denoiser a trained ``window-unet``, and the outputs are
those of ``diffda run`` on a grid: each variable's posterior mean under its own name and ``<name>_spread``
(physical units), the scores in normalised units, ``smooth.png`` maps of the window's centre time.

A window is the unit of work: ``analysis.zarr`` and ``smooth.png`` are written whole (temporary
siblings renamed into place, :mod:`pipeline.data.atomic`), then ``metrics.json``, atomically and
last, with the config's fingerprint: the completion marker. A window whose ``metrics.json`` holds
the same fingerprint is skipped (a resubmitted job writes each window once); one of another
configuration is refused unless ``fresh``. A stop request (``should_stop``) ends the work before
sampling starts; a window being sampled is finished, as the filter finishes its cycle.

Refused before any sampling (the message names the key): a window shorter than ``2k+1``, a window
denoiser whose width or variables do not match (on a grid: width, channels or grid), a window network of
the other family (a twin's on a grid, a grid's on a twin), observation times missing from the store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .. import __version__
from ..config import Config, ConfigError
from ..data.atomic import write_file, write_store, write_text
from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import make_schedule
from ..distributed.comm import Comm, LocalComm, shard_sizes, shard_start
from ..errors import CollectiveError, DiffdaError, InputError
from ..evaluate.scores import crps
from ..filters.ensemble import gather_rows
from .smoother import SmootherSpec, smooth

DIAGNOSTICS = ["rmse_analysis", "spread_analysis", "crps_analysis"]
TWINS = ("linear", "lorenz63", "lorenz96")
ARCHIVE_CHAINS = 64  # model=kde: the archive windows are cut from this many independent runs
CV_CHAINS, CV_WINDOWS, CV_ROWS = 16, 64, 1024  # model.bandwidth=cv: the held-out runs, windows each, rows kept


def window_denoiser(cfg: Config, preset: str, params: dict, dim: int) -> Denoiser:
    """The configured window denoiser over ``2k+1`` states: ``model=gaussian`` (the linear twin's
    exact window), ``model=kde`` (``model.archive`` windows, at least, cut from ``ARCHIVE_CHAINS`` runs of
    the twin, :mod:`.kde`; ``model.bandwidth=cv``: the factor by likelihood cross-validation on
    ``CV_ROWS`` rows of ``CV_CHAINS`` other runs, the chosen one in the denoiser's ``factor``) or ``model=neural`` (the window network in ``model.checkpoint``, :mod:`.neural`;
    refused before its weights are read when its width, dimension or system differ from the run's)."""
    k = cfg.smoother.window_half_width
    schedule = make_schedule(cfg.schedule.kind, **cfg.schedule.params)
    if cfg.model.kind == "gaussian":
        if preset != "linear":
            raise ConfigError(f"model=gaussian smooths the linear twin only (the exact window of a linear "
                              f"chain); data.preset={preset} needs model=kde")
        from ..models.dynamics import Linear
        from .gaussian import GaussianWindowDenoiser

        M = Linear(float(params["a"]), float(params["c"])).matrix(dim)
        return GaussianWindowDenoiser(schedule, M, float(params["q"]) * torch.eye(dim, dtype=torch.float64), k)
    if cfg.model.kind == "kde":
        from ..data.twins import simulate_chains
        from .kde import KDEWindowDenoiser

        if cfg.model.patch is not None:  # refused before the archive is simulated
            if preset != "lorenz96":
                raise ConfigError(f"model.patch={cfg.model.patch}: local KDE patches need a ring (data.preset="
                                  f"lorenz96); remove model.patch for data.preset={preset}")
            if 2 * cfg.model.patch >= dim:
                raise ConfigError(f"model.patch={cfg.model.patch}: a patch of {2 * cfg.model.patch + 1} positions "
                                  f"does not fit the ring of {dim}; choose model.patch < {(dim + 1) // 2}")
        g = torch.Generator().manual_seed(10_000 + cfg.run.seed)
        chains = min(ARCHIVE_CHAINS, cfg.model.archive)  # independent of the truth, integrated as one batch
        archive = simulate_chains(preset, params, chains, -(-cfg.model.archive // chains) + 2 * k - 1, g)
        def build(bandwidth: float | None):
            if cfg.model.patch is not None:
                from .kde import LocalKDEWindowDenoiser

                return LocalKDEWindowDenoiser.from_trajectory(schedule, archive, k, cfg.model.patch, cfg.model.archive,
                                                              bandwidth, seed=cfg.run.seed)
            return KDEWindowDenoiser.from_trajectory(schedule, archive, k, bandwidth)

        if cfg.model.bandwidth != "cv":
            return build(cfg.model.bandwidth)
        from .kde import cut_windows, cv_factor

        den = build(None)
        g_held = torch.Generator().manual_seed(30_000 + cfg.run.seed)  # other runs than the archive's
        held = den.rows(cut_windows(simulate_chains(preset, params, CV_CHAINS, CV_WINDOWS + 2 * k - 1, g_held), k))
        keep = torch.randperm(held.shape[0], generator=g_held)[:CV_ROWS]
        return build(cv_factor(den.archive_rows(), held[keep]))
    if cfg.model.kind == "neural":
        from ..data.twins import system_of
        from .neural import NeuralWindowDenoiser

        check_network_guidance(cfg)
        return NeuralWindowDenoiser.from_checkpoint(cfg.model.checkpoint, schedule, k, system_of(preset, params))
    raise ConfigError(f"model={cfg.model.kind}: diffda smooth takes model=gaussian, kde or neural")


def check_network_guidance(cfg: Config) -> None:
    """Refuse MMPS with the Jacobian covariance over a trained window network."""
    if cfg.guidance.method == "mmps" and cfg.guidance.covariance == "jacobian":
        raise ConfigError("model=neural: guidance=mmps with guidance.covariance=jacobian is refused: a trained "
                          "network's Jacobian is no covariance at high noise (asymmetric, indefinite, 50x off "
                          "at t = 1 on the linear twin) and the conjugate gradients diverge on it; set "
                          "guidance=sda (the SDA seed's choice) or guidance.covariance=diagonal")


def check_length(k: int, length: int) -> None:
    """Refuse a window shorter than ``2k+1``."""
    if length < 2 * k + 1:
        raise ConfigError(f"smoother.window_half_width={k} needs a window of at least 2k+1 = {2 * k + 1} "
                          f"observation times; run.cycles gives {length}")


def check_window(denoiser: Denoiser, k: int, length: int, dim: int) -> None:
    """Refuse a window shorter than ``2k+1`` and a denoiser of another width or variable count."""
    check_length(k, length)
    width = getattr(denoiser, "width", None)
    if width != 2 * k + 1:
        raise ConfigError(f"the window denoiser spans {width} states but smoother.window_half_width={k} "
                          f"needs 2k+1 = {2 * k + 1}")
    if getattr(denoiser, "dim", None) != dim:
        raise InputError(f"the window denoiser models {getattr(denoiser, 'dim', None)} variables but the "
                         f"data's state 'x' has {dim} components (data.preset / model)")


def spec_of(cfg: Config) -> SmootherSpec:
    s, g = cfg.sampler, cfg.guidance
    options = {"mmps": {"cg_iterations": g.cg_iterations, "covariance": g.covariance}, "sda": {"gamma": g.gamma},
               "dps": {"scale": g.scale}}[g.method]
    return SmootherSpec(k=cfg.smoother.window_half_width, steps=s.steps, eta=s.eta, corrections=s.corrections,
                        delta=s.delta, t_min=s.t_min, grid=s.grid, guidance=g.method, guidance_options=options,
                        block=cfg.smoother.block, overlap=cfg.smoother.overlap, batch=cfg.smoother.batch,
                        jacobian=cfg.smoother.jacobian, stream=cfg.run.start << 16)


@dataclass
class SmoothResult:
    metrics: dict  # rank 0's metrics ({} on the other ranks and when stopped)
    out_dir: Path
    skipped: bool = False  # the window was already complete
    stopped: bool = False  # a stop request came before sampling: nothing written


def completed(out_dir: Path) -> dict | None:
    """The metrics of the complete window in ``out_dir`` (its completion marker), or None."""
    try:
        metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if "fingerprint" in metrics and (Path(out_dir) / "analysis.zarr").exists() else None


def smooth_window(cfg: Config, data_dir: Path, out_dir: Path, comm: Comm | None = None,
                  should_stop: Callable[[], bool] | None = None, fresh: bool = False) -> SmoothResult:
    """Smooth the window (or skip it when complete, see the module docstring); every rank calls this."""
    from ..run import _any_rank, fingerprint

    comm = comm or LocalComm()
    wall0 = time.perf_counter()
    fp = fingerprint(cfg, unread="filter")
    done = completed(out_dir) if comm.rank == 0 and not fresh else None
    if _any_rank(comm, done is not None and done["fingerprint"] != fp):
        raise CollectiveError(f"{out_dir} holds a smoothed window of another configuration; choose a new --out "
                          f"or pass --fresh")
    if _any_rank(comm, done is not None):
        return SmoothResult(done or {}, Path(out_dir), skipped=True)
    if should_stop is not None and _any_rank(comm, should_stop()):
        return SmoothResult({}, Path(out_dir), stopped=True)
    inputs = (twin_window if cfg.data.preset in TWINS else grid_window)(cfg, data_dir, out_dir)
    k, n_total, length = cfg.smoother.window_half_width, cfg.smoother.samples, inputs.y.shape[0]
    spec = spec_of(cfg)
    from .smoother import blocks

    blocks(length, spec.block, spec.overlap, k)  # refuses a block shorter than 2k+1
    if n_total < comm.size:
        raise ConfigError(f"smoother.samples={n_total} is fewer than the {comm.size} ranks")
    n = shard_sizes(n_total, comm.size)[comm.rank]
    first = shard_start(n_total, comm.size, comm.rank)
    ids = torch.arange(first, first + n)
    x, stats = smooth(inputs.window, inputs.y, inputs.variance, inputs.operator, spec, cfg.run.seed, ids.tolist())
    seconds = torch.cat(comm.all_gather(torch.tensor([stats["seconds"]], dtype=torch.float64))).max()
    (samples,) = gather_rows(comm, ids, x.double())  # [S, L, D] in sample order, every rank
    if comm.rank != 0:
        comm.barrier()
        return SmoothResult({}, Path(out_dir))
    (Path(out_dir) / "metrics.json").unlink(missing_ok=True)  # no marker over a store being replaced
    metrics = inputs.write(samples)
    metrics.update(wall_seconds=time.perf_counter() - wall0, denoiser_seconds=float(seconds),
                   denoiser_calls=int(stats["calls"]) * comm.size, ranks=comm.size, fingerprint=fp)
    write_text(Path(out_dir) / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # the marker, last
    comm.barrier()
    return SmoothResult(metrics, Path(out_dir))


@dataclass
class WindowInputs:
    """What one window's smoothing needs: the window denoiser, the observations ``y`` ``[L, D]`` (NaN where
    not observed) with their variance (scalar or ``[L, D]``) and operator, the truth ``[L, D]``, and
    ``write(samples [S, L, D]) -> metrics`` (the outputs in the data's layout; no timings)."""

    window: Denoiser
    y: torch.Tensor
    variance: float | torch.Tensor
    operator: str
    truth: torch.Tensor
    write: Callable[[torch.Tensor], dict]


def twin_window(cfg: Config, data_dir: Path, out_dir: Path) -> WindowInputs:
    """A twin's window (``data.preset`` linear, lorenz63, lorenz96), its checks done."""
    from ..data.twins import params_of
    from ..problems import load_twin

    cfg_twin = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kind": "gaussian"})})
    problem = load_twin(cfg_twin, data_dir, torch.device("cpu"), torch.float64)  # refuses missing times
    attrs = problem.attrs
    params = params_of(attrs)
    length, dim = problem.n_cycles, problem.state_shape[0]
    k = cfg.smoother.window_half_width
    check_length(k, length)  # before building the denoiser (the KDE simulates an archive)
    window = window_denoiser(cfg, attrs["preset"], params, dim)
    check_window(window, k, length, dim)
    y = problem.obs_values.clone()  # [L, D], NaN = not observed
    truth = problem.truth_values[1:length + 1]  # [L, D]
    return WindowInputs(window, y, problem.noise_variance, problem.operator, truth,
                        lambda samples: write_outputs(cfg, problem, params, samples, truth, y, out_dir, data_dir))


def grid_window(cfg: Config, data_dir: Path, out_dir: Path) -> WindowInputs:
    """A gridded window (``data.preset`` sphere, era5): :func:`pipeline.smoothers.grid.load_window`."""
    from .grid import load_window

    return load_window(cfg, data_dir, out_dir)


def scores(samples: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(mean, var)`` ``[L, D]`` of the samples ``[S, L, D]`` and, per time ``[L]``, the RMSE of the mean, the
    spread and the CRPS against ``truth`` ``[L, D]`` (equal weights; the filter's scores)."""
    n_total, length = samples.shape[0], samples.shape[1]
    mean, var = samples.mean(0), samples.var(0, unbiased=False) if n_total > 1 else torch.zeros_like(samples[0])
    rmse_t = ((mean - truth) ** 2).mean(-1).sqrt()
    spread_t = var.mean(-1).sqrt()
    w = torch.full((n_total,), 1.0 / n_total, dtype=torch.float64)
    crps_t = torch.tensor([crps(samples[:, i], w, truth[i]) for i in range(length)])
    return mean, var, rmse_t, spread_t, crps_t


def summary(cfg: Config, rmse_t: torch.Tensor, spread_t: torch.Tensor, crps_t: torch.Tensor, n_total: int) -> dict:
    """``metrics.json``'s scores (means over the window) and settings."""
    return {"rmse_analysis": float(rmse_t.mean()), "spread_analysis": float(spread_t.mean()),
            "crps_analysis": float(crps_t.mean()), "window": len(rmse_t), "samples": n_total,
            "window_half_width": cfg.smoother.window_half_width, "corrections": cfg.sampler.corrections,
            "guidance": cfg.guidance.method, "covariance": cfg.guidance.covariance,
            "model": cfg.model.kind, "method": "smoother", "software": f"diffda {__version__}"}


def write_outputs(cfg: Config, problem, params: dict, samples: torch.Tensor, truth: torch.Tensor,
                  y: torch.Tensor, out_dir: Path, data_dir: Path) -> dict:
    """``analysis.zarr`` and ``smooth.png`` from the samples ``[S, L, D]``; the metrics (no timings)."""
    from ..data.analysis import AnalysisStore

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_total, length = samples.shape[0], samples.shape[1]
    mean, var, rmse_t, spread_t, crps_t = scores(samples, truth)
    members = n_total if cfg.run.members else None
    attrs = {"config": cfg.to_dict(), "data": str(data_dir), "samples": n_total, "method": "smoother",
             "title": "diffda smoothed window: posterior mean and spread of the trajectory given all its observations"}
    fields = {"x": (("time", "component"), mean.numpy()), "x_spread": (("time", "component"), var.sqrt().numpy()),
              "rmse_analysis": (("time",), rmse_t.numpy()), "spread_analysis": (("time",), spread_t.numpy()),
              "crps_analysis": (("time",), crps_t.numpy())}
    if members:
        fields["x_members"] = (("time", "member", "component"), samples.permute(1, 0, 2).numpy())

    def fill(path: Path) -> None:
        store = AnalysisStore.create(path, problem.template(members), problem.times, attrs, DIAGNOSTICS)
        xr.Dataset(fields).to_zarr(path, region={"time": slice(0, length)}, mode="r+", consolidated=False)
        store.finalise()

    write_store(out_dir / "analysis.zarr", fill)
    metrics = summary(cfg, rmse_t, spread_t, crps_t, n_total)
    rts = None
    if problem.attrs["preset"] == "linear" and problem.operator == "identity":
        rts = oracle(params, y, problem.noise_variance, samples, truth)
        metrics.update({k: v for k, v in rts.items() if not k.startswith("_")})
    plot_window(out_dir / "smooth.png", truth, y, mean, var.sqrt(), rts,
                f"{cfg.data.preset}: smoother k={cfg.smoother.window_half_width}, S={n_total}, "
                f"{cfg.guidance.method}, C={cfg.sampler.corrections}")
    return metrics


def oracle(params: dict, y: torch.Tensor, variance: float, samples: torch.Tensor, truth: torch.Tensor) -> dict:
    """The RTS smoother of the linear twin beside the samples: RMSE, ``oracle_error`` (mean
    ``|m - m_RTS| / std_RTS``), ``oracle_spread_ratio`` (mean spread / RTS std) and ``oracle_mc``, three
    Monte-Carlo standard errors of ``oracle_error`` (``3 spread_ratio / sqrt(S)``)."""
    from ..models.dynamics import Linear
    from .gaussian import stationary_covariance
    from .rts import rts_smoother

    dim = y.shape[1]
    M = Linear(float(params["a"]), float(params["c"])).matrix(dim)
    Q = float(params["q"]) * torch.eye(dim, dtype=torch.float64)
    m, C = rts_smoother(y, M, Q, stationary_covariance(M, Q), variance)
    std = torch.diagonal(C, dim1=1, dim2=2).sqrt()
    mean = samples.mean(0)
    ratio = float((samples.std(0) / std).mean()) if samples.shape[0] > 1 else 0.0
    return {"rmse_rts": float(((m - truth) ** 2).mean(-1).sqrt().mean()),
            "oracle_error": float(((mean - m).abs() / std).mean()), "oracle_spread_ratio": ratio,
            "oracle_mc": 3 * ratio / samples.shape[0] ** 0.5, "_mean": m, "_std": std}


def plot_window(path: Path, truth, y, mean, spread, rts: dict | None, title: str, components: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = min(components, truth.shape[1])
    t = np.arange(1, truth.shape[0] + 1)
    fig, axes = plt.subplots(c, 1, figsize=(8, 2.2 * c + 0.6), sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(t, truth[:, j], color="black", lw=1, label="truth")
        ax.plot(t, y[:, j], ".", color="tab:red", ms=4, label="observation")
        ax.plot(t, mean[:, j], color="tab:blue", lw=1, label="smoothed mean")
        ax.fill_between(t, mean[:, j] - 2 * spread[:, j], mean[:, j] + 2 * spread[:, j], color="tab:blue",
                        alpha=0.2, lw=0)
        if rts is not None:
            ax.plot(t, rts["_mean"][:, j], "--", color="tab:orange", lw=1, label="RTS")
        ax.set_ylabel(f"x[{j}]")
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("time index in the window")
    fig.tight_layout()
    write_file(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)

r"""One assimilation run: inputs -> cycles -> ``analysis.zarr``, ``metrics.json``, a PNG.

Per cycle ``k = 1..K`` (every rank, its shard): the filter's cycle (weights, global ESS,
systematic resampling, propagation), weighted mean and spread reduced across ranks; every
``run.checkpoint_every`` cycles (and when the run ends or stops) one region write by rank 0 of
the analysis of the cycles since the last, then an atomic checkpoint. A rerun into the same
``--out`` resumes after the last checkpointed cycle and rewrites the cycles after it.

Non-finite values: an initial state is refused before anything is written (``InputError``); a
truth leaves its cycle unscored (NaN scores, ``unscored`` in the metrics); a particle stops the run
(``DiffdaError``) before its cycle is written, so the store and checkpoint end at a good cycle.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from . import __version__
from . import particle_checkpoint
from .config import Config
from .data.era5 import fmt_time
from .distributed.comm import Comm, LocalComm, TimedComm, shard_sizes, shard_start
from .errors import CollectiveError, DiffdaError, InputError
from .evaluate.scores import crps, rmse, spread
from .filters.base import Filter
from .filters.ensemble import Ensemble, current, gather_ensemble, weighted_moments
from .filters.localisation import Geometry
from .filters.propagate import Propagator, Timer
from .problems import Problem, load_twin
from .rng import ParticleNoise

DIAGNOSTICS = ["rmse_analysis", "rmse_forecast", "rmse_free", "spread_analysis", "crps_analysis", "ess", "alpha", "resampled",
               "cycle_seconds", "denoiser_seconds", "denoiser_calls", "comm_seconds", "resample_seconds",
               "moved", "moved_lower_bound"]
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
ProgressFn = Callable[[int, int, dict], None]
LOCALISED = ("letkf", "pf-local")  # the filters with a localisation radius


@dataclass
class RunResult:
    metrics: dict
    out_dir: Path
    resumed_from: int
    stopped: bool = False  # True when ``should_stop`` ended the run early (resumable)
    last_cycle: int = 0  # the last cycle written and checkpointed


def fingerprint(cfg: Config, unread: str = "smoother") -> str:
    """A hash of what determines the result (not the device, micro-batch or rank count).

    ``unread``: the section this job kind does not read (``smoother`` for a run, ``filter`` for a
    smoothing window)."""
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("device", "micro_batch", "backend", "checkpoint_every")}
    d["data"].pop("dir", None)
    d.pop(unread, None)
    if d["run"].get("init") is not None:  # where the start particles live, not what they are
        d["run"]["init"] = "set"
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def resolve_device(name: str, comm: Comm) -> torch.device:
    if comm.device.type != "cpu" or name == "auto":
        return comm.device if comm.device.type != "cpu" else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_problem(cfg: Config, data_dir: Path, device: torch.device, dtype: torch.dtype) -> Problem:
    if cfg.data.preset in ("linear", "lorenz96", "lorenz63"):
        return load_twin(cfg, data_dir, device, dtype)
    from .data.gridded import load_gridded  # the gridded (sphere/ERA5) problem

    return load_gridded(cfg, data_dir, device, dtype)


def auto_micro_batch(state_numel: int, n_local: int) -> int:
    """Particles per denoiser batch so one batch holds about 2^24 state values."""
    return max(1, min(n_local, (1 << 24) // max(state_numel, 1)))


def assimilate(cfg: Config, data_dir: Path, out_dir: Path, comm: Comm | None = None,
               progress: ProgressFn | None = None, fresh: bool = False,
               stop_after: int | None = None, should_stop: Callable[[], bool] | None = None,
               log: Callable[[str], None] | None = None) -> RunResult:
    """Run (or resume) the assimilation; every rank calls this. Returns the metrics (all ranks).

    ``should_stop`` (polled on every rank after each cycle's checkpoint; the flags are reduced over
    the ranks, so all stop after the same cycle): when it is true on any rank the run checkpoints
    and returns ``RunResult(stopped=True)``; a rerun resumes after that cycle.
    """
    comm = TimedComm(comm or LocalComm())
    out_dir = Path(out_dir)
    device = resolve_device(cfg.run.device, comm)
    dtype = DTYPES[cfg.run.dtype]
    problem = load_problem(cfg, data_dir, device, dtype)
    n_total = cfg.filter.particles
    if n_total < comm.size:
        raise CollectiveError(f"filter.particles={n_total} is fewer than the {comm.size} ranks; use at most {n_total} ranks")
    shape = tuple(problem.state_shape)
    n_local = shard_sizes(n_total, comm.size)[comm.rank]
    micro = cfg.run.micro_batch or auto_micro_batch(int(np.prod(shape)), max(n_local, 1))
    propagator = Propagator(
        denoiser=problem.denoiser, steps=cfg.sampler.steps, eta=cfg.sampler.eta,
        corrections=cfg.sampler.corrections, delta=cfg.sampler.delta, t_min=cfg.sampler.t_min,
        grid=cfg.sampler.grid, guidance=cfg.guidance.method,
        guidance_options=_guidance_options(cfg), micro_batch=micro, seed=cfg.run.seed,
        exact=cfg.sampler.exact,
    )
    history = problem.history
    geometry, radius = localisation(cfg, problem)
    auto = [k for k in radius if getattr(cfg.filter, k) == "auto"]
    if auto and log is not None and comm.rank == 0:
        units = "km" if len(problem.state_shape) > 1 else "grid points"
        log("from the observation spacing: " + ", ".join(f"filter.{k}={radius[k]:.0f} {units}" for k in auto))
    filt = make_filter(cfg, comm, propagator, problem, geometry, radius.get("localization_radius"))
    additive = additive_inflation(cfg, comm, problem)
    static = static_gain(cfg, comm, problem, geometry, radius.get("static_radius"))
    # run.free_baseline: the same ensemble, same seeds, propagated without observations, timed apart
    baseline = None
    if cfg.run.free_baseline and cfg.filter.method != "free":
        from .filters.free import FreeRun

        baseline = FreeRun(comm, replace(propagator, timer=Timer()), shape, history)
    free_dir = out_dir / "checkpoint-free"

    ckpt_dir = out_dir / "checkpoint"
    fp = fingerprint(cfg)
    meta = particle_checkpoint.latest(ckpt_dir)
    if meta is not None and fresh:
        meta = None
    if meta is not None and meta.get("fingerprint") != fp:
        raise DiffdaError(f"{out_dir} holds a run with another configuration; choose a new --out or pass --fresh")
    members = n_total if cfg.run.members else None
    # a fresh start draws its initial ensemble now: a non-finite initial state, or a climatological store
    # that does not fit the data, is refused before anything is written
    initial = _initial_ensemble(cfg, comm, n_total, device, dtype, problem) if meta is None and cfg.run.init is None else None
    store = None
    if comm.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        from .data.analysis import AnalysisStore

        attrs = {"config": cfg.to_dict(), "fingerprint": fp, "data": str(data_dir), "particles": n_total,
                 "radii": radius}
        store = AnalysisStore.create(out_dir / "analysis.zarr", problem.template(members), problem.times,
                                     attrs, DIAGNOSTICS, resume=meta is not None)
    comm.barrier()
    if meta is not None:
        skipped: list[str] = []
        ens, done = particle_checkpoint.load(ckpt_dir, comm, n_total, device, dtype, skipped)
        if skipped and log is not None and comm.rank == 0:
            for why in skipped:
                log(f"skipped checkpoint {why}; resuming after cycle {done}")
    elif cfg.run.init is not None:  # a chained window: the previous run's final particles
        init = Path(cfg.run.init) / "checkpoint"
        if particle_checkpoint.latest(init) is None:
            raise DiffdaError(f"run.init={cfg.run.init}: no checkpoint there (has that run finished?)")
        ens, _ = particle_checkpoint.load(init, comm, n_total, device, dtype)
        done = 0
    else:
        ens, done = initial, 0
    free_ens = None
    if baseline is not None:
        if meta is not None and particle_checkpoint.latest(free_dir) is not None:
            free_ens, _ = particle_checkpoint.load(free_dir, comm, n_total, device, dtype)
        elif meta is None and cfg.run.init is not None and particle_checkpoint.latest(Path(cfg.run.init) / "checkpoint-free"):
            free_ens, _ = particle_checkpoint.load(Path(cfg.run.init) / "checkpoint-free", comm, n_total, device, dtype)
        elif meta is None:
            free_ens = Ensemble(ens.ids.clone(), ens.x.clone(), ens.log_w.clone())
    last_maps = None

    def save(k: int) -> None:  # the filter's particles and, when run, the free baseline's
        if free_ens is not None:
            particle_checkpoint.save(free_dir, comm, free_ens, k, fp)
        particle_checkpoint.save(ckpt_dir, comm, ens, k, fp)

    pending: list[dict] = []  # rank 0: the fields of the cycles not yet written, the last being cycle k
    dims = {**problem.dims(bool(members)), **{name: () for name in DIAGNOSTICS}}

    def flush(k: int) -> None:  # one region write of the pending cycles, ending at cycle k
        if store is not None:
            store.write_cycles(k - len(pending), pending, dims)
            pending.clear()

    resumed_from = done
    last_saved = done if meta is not None else 0  # the newest checkpoint in ckpt_dir (0: none)
    for k in range(done + 1, problem.n_cycles + 1):
        start = time.perf_counter()
        t0, c0 = propagator.timer.seconds, propagator.timer.calls
        comm0 = comm.seconds
        obs = problem.observation(k)
        _injected_failure(comm.rank, k)
        g = cfg.run.start + k  # the data's cycle: randomness is keyed by it, so windows chain bit for bit
        result = filt.cycle(ens, g, obs)
        if static is not None:
            result = static(result, obs)
        _injected_nan(result.next, k)
        bad = _nonfinite_particle(comm, result.analysis, result.next)
        if bad is not None:  # before cycle k is written: the store and checkpoint end at a good cycle
            kept = f"the checkpoint of cycle {last_saved} is kept (a rerun resumes there)" if last_saved else \
                "no checkpoint was written"
            flush(k - 1)
            raise CollectiveError(f"cycle {k}: particle {bad} is not finite (NaN or infinite) after the filter's cycle; "
                              f"the run stopped before writing cycle {k}; {kept}")
        d = result.diagnostics
        analysis = result.analysis
        now = Ensemble(analysis.ids, current(analysis.x, history), analysis.log_w)
        mean, var = weighted_moments(comm, now.x, now.log_w)
        truth = problem.truth(k)
        if truth is not None and not bool(torch.isfinite(truth).all()):
            if log is not None and comm.rank == 0:
                log(f"warning: cycle {k}: the truth at {fmt_time(problem.times[k - 1])} is not finite; "
                    f"cycle {k} is not scored")
            truth = None
        all_x, all_lw = gather_ensemble(comm, now) if (truth is not None or members) else (None, None)
        ens = result.next if additive is None else additive(result.next, g)
        diag = {
            "rmse_analysis": rmse(mean, truth) if truth is not None else np.nan,
            "rmse_forecast": rmse(result.forecast_mean, truth) if truth is not None else np.nan,
            "spread_analysis": spread(var),
            "crps_analysis": crps(all_x, torch.exp(all_lw), truth.cpu()) if truth is not None else np.nan,
            "ess": d.ess,
            "alpha": d.alpha,
            "resampled": float(d.resampled),
            "cycle_seconds": time.perf_counter() - start,
            "denoiser_seconds": _max_over_ranks(comm, propagator.timer.seconds - t0),
            "denoiser_calls": float(comm.all_reduce(torch.tensor([float(propagator.timer.calls - c0)], dtype=torch.float64, device=comm.device)).cpu()[0]),
            "comm_seconds": comm.seconds - comm0,
            "resample_seconds": d.resample_seconds,
            "moved": float(d.moved),
            "moved_lower_bound": float(d.moved_lower_bound),
            "rmse_free": np.nan,
        }
        mean_free = None
        if free_ens is not None:
            free = baseline.cycle(free_ens, g, obs)
            free_ens = free.next
            mean_free, _ = weighted_moments(comm, current(free.analysis.x, history), free.analysis.log_w)
            diag["rmse_free"] = rmse(mean_free, truth) if truth is not None else np.nan
        if k == problem.n_cycles and truth is not None and hasattr(problem, "layout"):
            last_maps = (mean, truth, mean_free, obs)
        if store is not None:
            fields = problem.fields(mean, torch.sqrt(var), all_x if members else None)
            fields.update({name: np.array(value, dtype="float64") for name, value in diag.items()})
            pending.append(fields)
        saved = k % cfg.run.checkpoint_every == 0 or k == problem.n_cycles
        if saved:
            flush(k)
            save(k)
            last_saved = k
        if progress is not None:
            progress(k, problem.n_cycles, diag)
        if stop_after is not None and k >= stop_after and k < problem.n_cycles:
            flush(k)
            return RunResult({}, out_dir, resumed_from, last_cycle=k)
        if should_stop is not None and k < problem.n_cycles and _any_rank(comm, should_stop()):
            if not saved:
                flush(k)
                save(k)
            return RunResult({}, out_dir, resumed_from, stopped=True, last_cycle=k)

    metrics = {}
    if comm.rank == 0 and store is not None:
        store.finalise()
        metrics = summarise(out_dir / "analysis.zarr", cfg)
        if radius:
            metrics["radii"] = radius  # auto resolved: the numbers the run used
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        from .evaluate.plots import plot_cycles

        ds = xr.open_zarr(out_dir / "analysis.zarr")
        plot_cycles(out_dir / "cycles.png", {k: ds[k].values for k in DIAGNOSTICS}, n_total,
                    f"{cfg.data.preset}: {cfg.filter.method}, N={n_total}")
        if last_maps is not None:
            from .evaluate.maps import observed_points, plot_state_maps

            mean, truth, mean_free, obs = last_maps
            plot_state_maps(out_dir / "maps.png", problem, mean, truth, mean_free,
                            observed_points(obs.operator.index.cpu().numpy(), tuple(problem.state_shape)),
                            f"{cfg.data.preset}: {cfg.filter.method}, N={n_total}, cycle {problem.n_cycles}")
    comm.barrier()
    return RunResult(metrics, out_dir, resumed_from, last_cycle=problem.n_cycles)


def make_filter(cfg: Config, comm: Comm, propagator: Propagator, problem: Problem, geometry: Geometry | None,
                radius: float | None) -> Filter:
    """The configured filter (``filter.method``) as one of the classes of :mod:`pipeline.filters`,
    for ``problem``'s state shape, history and (for the localised filters) ``geometry`` and ``radius``
    (``filter.localization_radius`` resolved by :func:`localisation`)."""
    from .filters.etkf import ETKF
    from .filters.free import FreeRun
    from .filters.pf_bootstrap import BootstrapPF
    from .filters.pf_optimal import OptimalProposalPF
    from .filters.resample_step import Resampler

    shape, history = tuple(problem.state_shape), problem.history
    f = cfg.filter
    method = f.method
    resampler = Resampler(comm, f.particles, f.resample_threshold, f.regularization, cfg.run.seed)
    band = tuple(f.target_ess) if f.tempering == "adaptive" else None
    if method == "pf-optimal":
        return OptimalProposalPF(comm, propagator, shape, resampler, inflate=f.weights == "inflated", band=band,
                                 history=history, diagonal=cfg.guidance.covariance == "diagonal")
    if method == "pf-bootstrap":
        return BootstrapPF(comm, propagator, shape, resampler, history=history)
    if method == "etkf":
        return ETKF(comm, propagator, shape, f.inflation, history)
    if method == "free":
        return FreeRun(comm, propagator, shape, history)
    if method == "kde":
        from .filters.kde import KDEFilter

        return KDEFilter(comm, propagator, shape, f.kde_bandwidth_x, f.kde_bandwidth_y, history)
    if method in LOCALISED:
        if method == "letkf":
            from .filters.letkf import LETKF

            return LETKF(comm, propagator, shape, geometry, f.particles, radius, f.inflation, f.rtps, history)
        from .filters.pf_local import LocalPF

        return LocalPF(comm, propagator, shape, geometry, f.particles, radius, cfg.run.seed,
                       band=band, history=history, rtps=f.rtps, inflation=f.inflation, transform=f.transform,
                       hybrid=f.hybrid)
    raise DiffdaError(f"filter.method={method} is not implemented")


def _beside_checkpoint(cfg: Config, path: Path | None, file: str, key: str, how: str) -> Path:
    """``path``, or ``file`` beside ``model.checkpoint`` (the shipped emulator's when unset)."""
    if path is not None:
        return path
    if cfg.model.kind != "neural":
        raise DiffdaError(f"{key} needs a file for model={cfg.model.kind}: set {key}=FILE; {how}")
    from .models.weights import default_checkpoint

    return Path(cfg.model.checkpoint or default_checkpoint()) / file


def additive_inflation(cfg: Config, comm: Comm, problem: Problem):
    """The configured :class:`~pipeline.filters.additive.AdditiveInflation` (None when
    ``filter.additive_inflation = 0``, and for ``filter.method=free``: the model alone, like the free
    baseline), its samples from ``filter.model_error`` or beside the checkpoint."""
    if cfg.filter.additive_inflation == 0 or cfg.filter.method == "free":
        return None
    from .filters.additive import AdditiveInflation
    from .models.model_error import FILE, load_anomalies

    path = _beside_checkpoint(cfg, cfg.filter.model_error, FILE, "filter.model_error",
                              "make model-error samples with `diffda model-error`")
    anomalies = load_anomalies(path, tuple(problem.state_shape))
    return AdditiveInflation(comm, anomalies, cfg.filter.additive_inflation, cfg.run.seed, problem.history)


def static_gain(cfg: Config, comm: Comm, problem: Problem, geometry: Geometry | None, radius: float | None):
    """The configured :class:`~pipeline.filters.static_gain.StaticGain` (None unless :func:`static_on`),
    its samples from ``filter.static_samples`` or beside the checkpoint, ``B = s^2 Cov(samples)``,
    localised at ``radius`` (``filter.static_radius`` resolved by :func:`localisation`) on ``geometry``."""
    if not static_on(cfg):
        return None
    from .filters.static_gain import StaticGain
    from .models.static_samples import FILE, load_anomalies

    f = cfg.filter
    path = _beside_checkpoint(cfg, f.static_samples, FILE, "filter.static_samples",
                              "make tendency samples with `diffda static-samples`")
    a = load_anomalies(path, tuple(problem.state_shape))
    z = f.static_scale * a / (a.shape[0] - 1) ** 0.5
    return StaticGain(comm, z, geometry, radius, f.static_gain, problem.history)


def static_on(cfg: Config) -> bool:
    """Whether the run has the static step: ``filter.static_gain > 0``, and not for the free run."""
    return cfg.filter.static_gain > 0 and cfg.filter.method != "free"


def localisation(cfg: Config, problem: Problem) -> tuple[Geometry | None, dict[str, float | None]]:
    """The one :class:`~pipeline.filters.localisation.Geometry` of the run's columns (None when nothing
    is localised), shared by the filter and the static step with its taper cache, and the radii the run
    uses, as numbers (None: infinite): ``localization_radius`` for ``letkf``/``pf-local``,
    ``static_radius`` with the static step. ``auto`` is resolved from the observed columns of cycle 1
    (:func:`~pipeline.filters.localisation.resolve_radius`): the same on every rank and on a resumed run."""
    f = cfg.filter
    wanted = {key: spec for key, spec, used in (
        ("localization_radius", (f.localization_radius, f.localization_spacings), f.method in LOCALISED),
        ("static_radius", (f.static_radius, f.static_spacings), static_on(cfg))) if used}
    if not wanted:
        return None, {}
    from .filters.localisation import geometry_of, resolve_radius

    geometry = geometry_of(problem)
    if all(value != "auto" for value, _ in wanted.values()):
        return geometry, {key: value for key, (value, _) in wanted.items()}
    columns = geometry.columns_of(problem.observation(1).operator.index)
    if columns.numel() == 0:
        key = next(key for key, (value, _) in wanted.items() if value == "auto")
        raise InputError(f"filter.{key}=auto takes the radius from the observations of cycle 1, and it has none; "
                         f"give the radius itself (e.g. --set filter.{key}=750, km on grids) or start the run at a "
                         "cycle with observations (run.start)")
    return geometry, {key: resolve_radius(value, spacings, geometry, columns) for key, (value, spacings) in wanted.items()}


def summarise(store: Path, cfg: Config) -> dict:
    """Metrics over cycles after ``filter.spinup`` from the analysis store's diagnostics.

    ``unscored``: the cycles after spin-up without an analysis RMSE (their truth was not finite, or
    there is none); their scores are NaN and left out of the means.
    """
    ds = xr.open_zarr(store)
    sl = slice(cfg.filter.spinup, None)
    d = {k: ds[k].values for k in DIAGNOSTICS}
    cycle = np.arange(1, len(d["ess"]) + 1)
    mean = lambda k: float(np.nanmean(d[k][sl])) if np.isfinite(d[k][sl]).any() else None  # noqa: E731
    return {
        "rmse_analysis": mean("rmse_analysis"),
        "rmse_forecast": mean("rmse_forecast"),
        "rmse_free": mean("rmse_free"),
        "spread_analysis": mean("spread_analysis"),
        "crps_analysis": mean("crps_analysis"),
        "ess_mean": mean("ess"),
        "ess_min": float(np.nanmin(d["ess"][sl])),
        "alpha_mean": mean("alpha"),
        "resample_count": int(np.nansum(d["resampled"])),
        "wall_seconds": float(np.nansum(d["cycle_seconds"])),
        "denoiser_seconds": float(np.nansum(d["denoiser_seconds"])),
        "denoiser_calls": int(np.nansum(d["denoiser_calls"])),
        "cycles": int(len(d["ess"])),
        "unscored": [int(k) for k in cycle[sl][~np.isfinite(d["rmse_analysis"][sl])]],
        "particles": cfg.filter.particles,
        "method": cfg.filter.method,
        "software": f"diffda {__version__}",
    }


def _injected_failure(rank: int, cycle: int) -> None:
    """Fault injection for tests: ``DIFFDA_FAIL_RANK=r DIFFDA_FAIL_CYCLE=k`` makes rank r raise in cycle k."""
    import os

    if os.environ.get("DIFFDA_FAIL_RANK") == str(rank) and os.environ.get("DIFFDA_FAIL_CYCLE", "1") == str(cycle):
        raise RuntimeError(f"injected failure in cycle {cycle} (DIFFDA_FAIL_RANK={rank})")


def _injected_nan(ens: Ensemble, cycle: int) -> None:
    """Fault injection for tests: ``DIFFDA_NAN_CYCLE=k`` sets particle ``DIFFDA_NAN_PARTICLE`` (global
    index, default 0) to NaN after cycle k's filter step, on the rank holding it."""
    import os

    if os.environ.get("DIFFDA_NAN_CYCLE") == str(cycle):
        ens.x[(ens.ids == int(os.environ.get("DIFFDA_NAN_PARTICLE", "0"))).to(ens.x.device)] = float("nan")


def _nonfinite_particle(comm: Comm, *ensembles: Ensemble) -> int | None:
    """The smallest global index of a particle whose state is not finite or whose log-weight is NaN,
    over all ranks (None when there is none); every rank gets the same answer."""
    local = float("inf")
    for e in ensembles:
        bad = ~torch.isfinite(e.x.flatten(1)).all(dim=1).cpu() | torch.isnan(e.log_w).cpu()
        if bad.any():
            local = min(local, float(e.ids.cpu()[bad].min()))
    first = -_max_over_ranks(comm, -local)
    return None if first == float("inf") else int(first)


def _guidance_options(cfg: Config) -> dict:
    g = cfg.guidance
    return {"mmps": {"cg_iterations": g.cg_iterations, "covariance": g.covariance}, "sda": {"gamma": g.gamma},
            "dps": {"scale": g.scale}}[g.method]


def _any_rank(comm: Comm, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (one small all-reduce)."""
    return bool(comm.all_reduce(torch.tensor([float(bool(flag))], dtype=torch.float64, device=comm.device)).cpu()[0] > 0)


def _max_over_ranks(comm: Comm, value: float) -> float:
    vals = comm.all_gather(torch.tensor([value], dtype=torch.float64, device=comm.device))
    return float(torch.cat(vals).max().cpu())


def _initial_ensemble(cfg: Config, comm: Comm, n_total: int, device: torch.device, dtype: torch.dtype,
                      problem: Problem) -> Ensemble:
    """This rank's share of the initial ensemble: ``x0 + init_std * eps_i``, ``x0`` the problem's initial
    state (``[*S]``, or ``[K, *S]`` for a denoiser conditioned on K states) and ``eps_i`` from particle
    ``i``'s own stream; with ``filter.init_climatology``, particle ``i``'s states drawn from that store
    instead (:meth:`~pipeline.data.gridded.GriddedProblem.climatological_states`). A non-finite draw on
    any rank raises the same ``InputError`` (the first such particle's) on every rank."""
    n = shard_sizes(n_total, comm.size)[comm.rank]
    start = shard_start(n_total, comm.size, comm.rank)
    ids = torch.arange(start, start + n, dtype=torch.long)
    if cfg.filter.init_climatology is None:
        x0 = problem.initial_state()
        noise = ParticleNoise(cfg.run.seed, 0, ids, "init", device, dtype)
        x = x0 + cfg.filter.init_std * noise.normal(None, tuple(x0.shape)) if n else x0.new_zeros((0, *x0.shape))
    else:
        climatology = problem.climatology(cfg.filter.init_climatology)
        try:
            x, failed = problem.climatological_states(climatology, ids, cfg.run.seed).to(device, dtype), False
        except InputError:
            failed = True
        if _any_rank(comm, failed):  # every rank redraws all particles: the first bad one's message everywhere
            problem.climatological_states(climatology, torch.arange(n_total), cfg.run.seed)
            raise InputError("a climatological initial state is not finite (filter.init_climatology)")
    log_w = torch.full((n,), -float(np.log(n_total)), dtype=torch.float64)
    return Ensemble(ids, x, log_w)

r"""The gridded problem: ERA5-layout truth/reference and observations, a gridded denoiser.

Inputs (``data.*`` keys; paths or fsspec URLs): the reference ``data.store`` (default
``DIR/truth.zarr``), the observations ``data.observations`` (default ``DIR/observations.zarr``;
same layout, NaN where unobserved, ``noise_std`` per variable, as written by
:mod:`pipeline.data.observe`, or a real observation store) and the statistics
``data.statistics`` (default ``DIR/statistics.json``, written by ``diffda prepare``; computed
and saved on first use when absent).

State. The filter sees the **normalised** state ``z = (x - mean) / std`` ``[C, H, W]``,
channels ``(variable, level)`` in a fixed order (:class:`~pipeline.models.network_checkpoint.GridLayout`:
the checkpoint's order for ``model=neural``, else the reference's variables and levels). Since
``H`` observes the state elementwise, observing physical ``x`` with noise ``sigma_v`` is the same
as observing ``z`` with

    y_z = (y - mean_c) / std_c,    var_z = sigma_v^2 / std_c^2,

so the observation operator stays the identity on ``z`` (equivalently, ``H`` composed with
``to_physical``). ``fields`` writes physical units: ``mean + std z`` and ``std * spread``,
per variable over ``(level, latitude, longitude)`` (``(member, level, ...)`` for members).
RMSE/CRPS diagnostics are in normalised units (one number across variables).

Cycles: cycle ``k`` (``k = 1..K``) assimilates the observations at reference time
``run.start + history - 1 + k``; the initial state is the reference at the ``history`` times
before it. Observations and reference of cycle ``k + 1`` are read in the background while cycle
``k`` computes (:class:`~pipeline.data.stream.Prefetcher`, ``data.prefetch`` cycles ahead).

Denoisers. ``model=neural``: :class:`~pipeline.models.neural.NeuralDenoiser` from
``model.checkpoint`` (its normalisation; refused by ``check_compatible`` when its grid or
channels differ from the inputs; ``data.regrid=true`` regrids the reference to its grid).
``model=gaussian``: a per-channel Gaussian AR(1) in normalised units from the statistics,

    z^{k+1} = phi_c z^k + xi,   xi ~ N(0, 1 - phi_c^2),   phi_c = 1 - r_c^2 / 2,

``r_c`` the std of one-step increments (``residual_std``); the exact denoiser of that prior
(:class:`~pipeline.models.gaussian.GaussianDenoiser`). It is a cheap stand-in for tests and I/O
benchmarks, not a forecast model.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.observation import Observation
from ..errors import InputError
from ..models.network_checkpoint import GridLayout
from ..models.normalisation import Normalisation
from .era5 import (COORD_ATTRS, Era5Reader, Statistics, check_grid, check_time_steps, cf_attrs,
                   compute_statistics, open_store, fmt_time)
from .stream import Prefetcher

#: the problems made in this process (weakly held), for instrumentation such as ``diffda bench io``
INSTANCES: "weakref.WeakSet[GriddedProblem]" = weakref.WeakSet()
_SERIAL = itertools.count()


def ar1_denoiser(schedule, normalisation: Normalisation):
    """The exact denoiser of the per-channel AR(1) prior above (``GaussianDenoiser``)."""
    from ..models.gaussian import GaussianDenoiser

    r = torch.tensor(normalisation.residual_std or (1.0,) * normalisation.channels, dtype=torch.float64)
    phi = (1 - r**2 / 2).clamp(0.0, 0.999)
    q = (1 - phi**2)[:, None, None]
    phi_b = phi[:, None, None]

    def dynamics(condition: Tensor) -> Tensor:
        c = condition if condition.ndim == 4 else condition[:, -1]
        return phi_b.to(c.device, c.dtype) * c

    return GaussianDenoiser(schedule, dynamics, q)


class ObservationReader:
    """Observations in the state's channel layout: ``[C, H, W]`` physical with NaN, and the noise
    standard deviation per channel. Variables or levels of the store that the state lacks (a
    state restricted by ``data.variables``/``data.levels`` or by the checkpoint) are left out,
    listed in ``dropped`` and reported once with a warning."""

    def __init__(self, source: Any, layout: GridLayout, noise_std: dict[str, float] | None = None,
                 storage_options: dict | None = None):
        self.name = f"observations {source}"
        ds = source if isinstance(source, xr.Dataset) else open_store(source, storage_options, what="observations store")
        if _same_points(ds, layout):  # the same grid stored in another order: reorder (exact, NaNs kept)
            ds = ds.reindex(latitude=list(layout.latitude), longitude=list(layout.longitude), method="nearest",
                            tolerance=1e-4)
        check_grid(ds, layout.latitude, layout.longitude, self.name, "the reference (model state) grid")
        self.layout = layout
        state_vars = set(layout.variables)
        self.slots: list[tuple[str, int | None, int]] = []  # (variable, level index in store or None, channel)
        std = np.full(len(layout.channels), np.nan)
        gridded = [str(v) for v in ds.data_vars if {"time", "latitude", "longitude"} <= set(ds[v].dims)]
        if not gridded:
            raise InputError(f"{self.name} holds no gridded variable (time, latitude, longitude)")
        self.dropped: list[str] = []
        for v in gridded:
            if v not in state_vars:
                self.dropped.append(v)
                continue
            s = (noise_std or {}).get(v, ds[v].attrs.get("noise_std"))
            if s is None:
                raise InputError(f"{self.name}: variable {v!r} has no 'noise_std' attribute; set data.noise_std.{v}=SIGMA")
            if "level" in ds[v].dims:
                for j, lv in enumerate(ds[v].level.values.astype(float)):
                    c = _channel(layout, v, float(lv))
                    if c is None:
                        self.dropped.append(f"{v}@{lv:g}")
                        continue
                    self.slots.append((v, j, c))
                    std[c] = float(np.atleast_1d(s)[j] if np.size(s) > 1 else s)
            else:
                c = _channel(layout, v, None)
                self.slots.append((v, None, c))
                std[c] = float(s)
        if not self.slots:
            raise InputError(f"{self.name} observes nothing of the model state ({', '.join(layout.channel_names())}); "
                             f"it holds {', '.join(gridded)}; observe a state variable or widen the state")
        if self.dropped:
            import warnings

            warnings.warn(f"{self.name}: observations of {', '.join(self.dropped)} are not in the model state "
                          "and are left out", stacklevel=2)
        self.ds = ds[gridded]
        self.noise_std = std  # [C], NaN for unobserved channels
        self.times = ds.time.values

    def read(self, time: Any) -> np.ndarray:
        hits = np.flatnonzero(self.times == time)
        if not hits.size:
            raise InputError(f"{self.name} has no observations at {fmt_time(time)}, a cycle time of the window "
                             f"(its times run {fmt_time(self.times[0])} .. {fmt_time(self.times[-1])}); "
                             "a time gap: fill it (NaN fields are fine) or shorten the window")
        part = self.ds.isel(time=int(hits[0])).compute()
        C, H, W = self.layout.shape
        out = np.full((C, H, W), np.nan, dtype=np.float64)
        for v, j, c in self.slots:
            a = part[v].transpose(*[d for d in ("level", "latitude", "longitude") if d in part[v].dims]).values
            out[c] = a[j] if j is not None else a
        return out


def _same_points(ds: xr.Dataset, layout: GridLayout, tol: float = 1e-4) -> bool:
    a, b = np.sort(ds.latitude.values.astype(float)), np.sort(np.asarray(layout.latitude, float))
    c, d = np.sort(ds.longitude.values.astype(float)), np.sort(np.asarray(layout.longitude, float))
    return a.shape == b.shape and c.shape == d.shape and np.allclose(a, b, atol=tol) and np.allclose(c, d, atol=tol)


def _channel(layout: GridLayout, variable: str, level: float | None) -> int | None:
    for i, (v, lv) in enumerate(layout.channels):
        if v == variable and (lv is None and level is None or lv is not None and level is not None
                              and abs(lv - level) < 1e-6):
            return i
    return None


@dataclass(eq=False)
class GriddedProblem:
    """The :class:`~pipeline.problems.Problem` of gridded data (see the module docstring)."""

    reference: Era5Reader
    observations: ObservationReader
    normalisation: Normalisation
    denoiser: Denoiser | None  # None: diffda smooth's problem (the smoother builds its window prior)
    times: np.ndarray  # cycle times [K]
    first: int  # reference index of cycle 0 (the initial state)
    history: int
    device: torch.device
    dtype: torch.dtype
    prefetch: int = 1
    name: str = "gridded"
    _stream: Prefetcher | None = field(default=None, repr=False)
    _item: tuple[int, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.layout = self.reference.layout
        self.state_shape = self.layout.shape
        self._mean = torch.tensor(self.normalisation.mean, dtype=torch.float64)[:, None, None]
        self._std = torch.tensor(self.normalisation.std, dtype=torch.float64)[:, None, None]
        self._stream = Prefetcher(self._load, last=self.n_cycles, depth=self.prefetch, name="gridded")
        self.serial = next(_SERIAL)
        INSTANCES.add(self)

    @property
    def n_cycles(self) -> int:
        return len(self.times)

    @property
    def stream_stats(self):
        return self._stream.stats

    # -- inputs ---------------------------------------------------------------------------------
    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cycle ``k``'s observations and reference (physical, ``[C, H, W]``), read from the stores."""
        return self.observations.read(self.times[k - 1]), self.reference.read(self.first + k).astype(np.float64)

    def _cycle(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._item is None or self._item[0] != k:
            self._item = (k, self._stream.get(k))
        return self._item[1]

    def normalise(self, x: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        return ((x - self._mean) / self._std).to(self.device, self.dtype)

    def _history(self, reader: Era5Reader, t: int, what: str, fix: str) -> Tensor:
        """``reader``'s ``history`` consecutive states ending at time index ``t``, normalised (``[*S]``, or
        ``[K, *S]`` for K > 1); an ``InputError`` naming ``what`` and the first non-finite point (variable,
        level, time, latitude, longitude), then ``fix``."""
        states = []
        for i in range(t - self.history + 1, t + 1):
            x = reader.read(i)
            bad = np.argwhere(~np.isfinite(x))
            if bad.size:
                c, h, w = (int(j) for j in bad[0])
                v, lv = self.layout.channels[c]
                level = f" at {lv:g} hPa" if lv is not None else ""
                raise InputError(f"{what} is not finite: {v}{level} at time {fmt_time(reader.times[i])}, "
                                 f"latitude {float(self.layout.latitude[h]):g}, longitude {float(self.layout.longitude[w]):g} "
                                 f"({len(bad)} value(s) NaN or infinite in {reader.name}); {fix}")
            states.append(self.normalise(x))
        return states[0] if self.history == 1 else torch.stack(states)

    def initial_state(self) -> Tensor:
        """The reference at the ``history`` times up to cycle 0, normalised; an ``InputError`` naming
        the first non-finite point."""
        return self._history(self.reference, self.first, "the initial state",
                             "fix the store or start the window elsewhere (run.start)")

    def climatology(self, store: str | Path) -> Era5Reader:
        """``store`` (an ERA5-layout Zarr store, or a data directory holding ``truth.zarr``) opened as a
        source of initial states: the data's variables, levels, grid and time
        step, in the data's channel order; an ``InputError`` naming what differs and the fix."""
        what = f"filter.init_climatology={store}"
        if (Path(store) / "truth.zarr").is_dir():  # a data directory (diffda make-data's --out)
            store = Path(store) / "truth.zarr"
        levels = list(self.layout.levels) or None
        try:
            reader = Era5Reader(store, self.layout.variables, levels, name=what, dtype=np.float64)
        except InputError as e:
            raise InputError(f"{e} (it must hold the data's variables {', '.join(self.layout.variables)}"
                             f"{' at levels ' + ', '.join(f'{v:g}' for v in levels) if levels else ''})") from None
        if set(reader.layout.channels) != set(self.layout.channels):
            raise InputError(f"{what} has channels {', '.join(reader.layout.channel_names())}, the data "
                             f"{', '.join(self.layout.channel_names())}: use a store of the same variables and levels")
        if not _same_points(reader.ds, self.layout):
            raise InputError(f"{what} is on a {reader.ds.sizes['latitude']}x{reader.ds.sizes['longitude']} grid that is "
                             f"not the data's {len(self.layout.latitude)}x{len(self.layout.longitude)}: regrid it first")
        if not (np.array_equal(reader.layout.latitude, self.layout.latitude)
                and np.array_equal(reader.layout.longitude, self.layout.longitude)):  # the same points, another order
            reader = Era5Reader(store, self.layout.variables, levels, name=what, dtype=np.float64,
                                grid=(self.layout.latitude, self.layout.longitude))
        if reader.layout.channels != self.layout.channels:
            reader = _reorder(reader, self.layout)
        if len(reader) < self.history:
            raise InputError(f"{what} holds {len(reader)} time(s); a member needs {self.history} consecutive ones")
        step, want = check_time_steps(reader.times, what), check_time_steps(self.reference.times, self.reference.name)
        if self.history > 1 and step is not None and want is not None and step != want:
            raise InputError(f"{what} steps every {step}, the data every {want}: a member's {self.history} history "
                             "states must be one data step apart")
        return reader

    def climatological_states(self, reader: Era5Reader, ids: Tensor, seed: int) -> Tensor:
        """Particle ``i``'s initial state: ``reader``'s ``history`` consecutive states ending at the time
        index ``t_i`` of :func:`~pipeline.rng.climatology_times` (particle ``i``'s own stream: independent
        of the rank holding it), normalised. ``[n, *S]`` or ``[n, K, *S]``."""
        from ..rng import climatology_times

        out = [self._history(reader, t, "a climatological initial state", "choose another run.seed or clean the store")
               for t in climatology_times(seed, ids, self.history, len(reader))]
        if not out:
            return torch.zeros((0, *([self.history] if self.history > 1 else []), *self.state_shape),
                               device=self.device, dtype=self.dtype)
        return torch.stack(out)

    def observation_field(self, k: int) -> tuple[Tensor, Tensor]:
        """Cycle ``k``'s normalised observations ``y_z`` ``[C, H, W]`` (NaN where unobserved) and their
        variances ``var_z`` ``[C, H, W]`` (1 where unobserved: never used), float64 on the CPU."""
        y, _ = self._cycle(k)
        y_z = (torch.from_numpy(y) - self._mean) / self._std
        var = torch.from_numpy(self.observations.noise_std**2)[:, None, None] / self._std**2
        var = var.expand_as(y_z).clone()
        var[torch.isnan(var)] = 1.0  # unobserved channels: y is NaN there, the value is never used
        return y_z, var

    def observation(self, k: int) -> Observation:
        y_z, var = self.observation_field(k)
        return Observation.from_field(y_z.to(self.device, self.dtype), var.to(self.device, self.dtype))

    def truth(self, k: int) -> Tensor:
        _, ref = self._cycle(k)
        return self.normalise(ref)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    # -- outputs --------------------------------------------------------------------------------
    def _groups(self) -> list[tuple[str, list[int], list[int] | None]]:
        """Per variable: its channels and their indices in the union of levels (None: single level)."""
        levels = self.layout.levels
        out = []
        for v in self.layout.variables:
            chans = [i for i, (name, _) in enumerate(self.layout.channels) if name == v]
            lv = self.layout.channels[chans[0]][1]
            if lv is None:
                out.append((v, chans, None))
            else:
                out.append((v, chans, [levels.index(self.layout.channels[c][1]) for c in chans]))
        return out

    def template(self, members: int | None) -> xr.Dataset:
        lat, lon = np.asarray(self.layout.latitude), np.asarray(self.layout.longitude)
        levels = np.asarray(self.layout.levels, dtype=float)
        coords: dict[str, Any] = {"latitude": ("latitude", lat, COORD_ATTRS["latitude"]),
                                  "longitude": ("longitude", lon, COORD_ATTRS["longitude"])}
        if levels.size:
            coords["level"] = ("level", levels, COORD_ATTRS["level"])
        if members:
            coords["member"] = ("member", np.arange(members), COORD_ATTRS["member"])
        src_attrs = {v: dict(self.reference.ds[v].attrs) for v in self.layout.variables}
        data = {}
        for v, _, lvi in self._groups():
            dims = ("level", "latitude", "longitude") if lvi is not None else ("latitude", "longitude")
            shape = tuple(len(levels) if d == "level" else len(lat) if d == "latitude" else len(lon) for d in dims)
            for name, extra in ((v, ()), (f"{v}_spread", ()), (f"{v}_members", ("member",))):
                if extra and not members:
                    continue
                d = (*extra, *dims)
                s = ((members,) if extra else ()) + shape
                data[name] = (d, np.zeros(s, dtype=np.float32), cf_attrs(name, src_attrs[v]))
        return xr.Dataset(data, coords=coords)

    def dims(self, members: bool) -> dict[str, tuple[str, ...]]:
        out = {}
        for v, _, lvi in self._groups():
            dims = ("level", "latitude", "longitude") if lvi is not None else ("latitude", "longitude")
            out[v] = dims
            out[f"{v}_spread"] = dims
            if members:
                out[f"{v}_members"] = ("member", *dims)
        return out

    def _split(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``[..., C, H, W]`` -> per variable ``[..., L, H, W]`` (NaN at levels it lacks) or ``[..., H, W]``."""
        nl = len(self.layout.levels)
        out = {}
        for v, chans, lvi in self._groups():
            if lvi is None:
                out[v] = x[..., chans[0], :, :].astype(np.float32)
            else:
                a = np.full((*x.shape[:-3], nl, *x.shape[-2:]), np.nan, dtype=np.float32)
                a[..., lvi, :, :] = x[..., chans, :, :]
                out[v] = a
        return out

    def fields(self, mean: Tensor, spread: Tensor, members: Tensor | None) -> dict[str, np.ndarray]:
        m = (mean.double().cpu() * self._std + self._mean).numpy()
        s = (spread.double().cpu() * self._std).numpy()
        out = {}
        for v, a in self._split(m).items():
            out[v] = a
        for v, a in self._split(s).items():
            out[f"{v}_spread"] = a
        if members is not None:
            x = (members.double().cpu() * self._std + self._mean).numpy()
            for v, a in self._split(x).items():
                out[f"{v}_members"] = a
        return out


def load_gridded(cfg: Any, data_dir: Path | None, device: torch.device, dtype: torch.dtype,
                 kind: str = "sphere-unet") -> GriddedProblem:
    """Open the inputs lazily, build the denoiser, check that everything fits.

    ``kind``: the network ``model=neural`` needs in ``model.checkpoint``: ``sphere-unet`` (the filter's
    emulator, the problem's denoiser) or ``window-unet`` (``diffda smooth``'s window prior, which the smoother
    builds itself: the problem then has no denoiser, a history of 1, the checkpoint's channels, grid
    (``check_compatible``) and normalisation)."""
    from ..diffusion.schedules import make_schedule

    data_dir = Path(data_dir) if data_dir is not None else None
    d = cfg.data
    store = getattr(d, "store", None) or (data_dir / "truth.zarr" if data_dir else None)
    obs_src = getattr(d, "observations", None) or (data_dir / "observations.zarr" if data_dir else None)
    if store is None or obs_src is None:
        raise InputError("gridded data needs --data DIR (with truth.zarr, observations.zarr) or data.store and data.observations")
    stats_path = getattr(d, "statistics", None) or (data_dir / "statistics.json" if data_dir else None)
    storage = dict(getattr(d, "storage_options", None) or {})
    variables = getattr(d, "variables", None)
    levels = getattr(d, "levels", None)
    start, stop = getattr(d, "start", None), getattr(d, "stop", None)
    schedule = make_schedule(cfg.schedule.kind, **cfg.schedule.params)

    meta, grid, history = None, None, 1
    if cfg.model.kind == "neural":
        from ..models.network_checkpoint import read_meta

        checkpoint = cfg.model.checkpoint
        if checkpoint is None:
            if cfg.data.preset != "sphere" or kind != "sphere-unet":
                raise InputError(f"model=neural needs model.checkpoint=DIR of a {kind} network (train one with "
                                 f"`diffda train{'' if kind == 'sphere-unet' else ' --set kind=' + kind}`)")
            from ..models.weights import default_checkpoint

            checkpoint = default_checkpoint()  # the shipped emulator of the sphere preset
        meta = read_meta(checkpoint, kind=kind)
        want = GridLayout.from_meta(meta)
        variables = want.variables
        levels = want.levels or None
        history = int(meta.get("history", 1))
        if getattr(d, "regrid", False):
            grid = (want.latitude, want.longitude)
    elif cfg.model.kind != "gaussian":
        raise InputError(f"model={cfg.model.kind} is not available for gridded data; use model=gaussian or model=neural")

    try:
        reference = Era5Reader(store, variables, levels, start, stop, grid=grid, storage_options=storage,
                               name=f"reference {store}", dtype=np.float64)
    except InputError as e:
        if meta is None:
            raise
        raise InputError(f"model.checkpoint={checkpoint} models {', '.join(GridLayout.from_meta(meta).channel_names())}"
                         f": {e}") from None
    if meta is not None:  # the checkpoint's channel order
        want = GridLayout.from_meta(meta)
        if set(want.channels) <= set(reference.layout.channels) and want.channels != reference.layout.channels:
            reference = _reorder(reference, want)
    if cfg.model.kind == "neural" and kind != "sphere-unet":  # the smoother's window prior: checked, built there
        from ..models.network_checkpoint import check_compatible

        try:
            check_compatible(meta, reference.layout)
        except InputError as e:
            raise InputError(f"model.checkpoint={checkpoint}: {e}") from None
        denoiser, normalisation = None, Normalisation.from_dict(meta["normalisation"])
    elif cfg.model.kind == "neural":
        from ..models.neural import NeuralDenoiser

        denoiser = NeuralDenoiser.from_checkpoint(checkpoint, schedule, device=device,
                                                  layout=reference.layout)
        normalisation = denoiser.normalisation
    else:
        stats = _statistics(stats_path, reference)
        normalisation = stats.normalisation(reference.layout)
        denoiser = ar1_denoiser(schedule, normalisation)

    observations = ObservationReader(obs_src, reference.layout, dict(getattr(d, "noise_std", None) or {}), storage)
    step = check_time_steps(reference.times, reference.name)
    first = int(getattr(cfg.run, "start", 0) or 0) + history - 1
    available = len(reference) - 1 - first
    if available < 1:
        raise InputError(f"{reference.name} holds {len(reference)} times: too few for run.start="
                         f"{getattr(cfg.run, 'start', 0)} and a history of {history}")
    cycles = cfg.run.cycles or available
    if cycles > available:
        raise InputError(f"run.cycles={cycles} but {reference.name} holds only {available} cycles after "
                         f"{fmt_time(reference.times[first])}; shorten the window or extend the data")
    times = reference.times[first + 1: first + 1 + cycles]
    missing = [t for t in times if not (observations.times == t).any()]
    if missing:
        raise InputError(f"observations {obs_src} lack {len(missing)} cycle time(s) of the window, first "
                         f"{fmt_time(missing[0])} (a time gap; the window runs {fmt_time(times[0])} .. "
                         f"{fmt_time(times[-1])} every {step}); fill it or shorten the window")
    return GriddedProblem(reference, observations, normalisation, denoiser, times, first, history, device, dtype,
                          prefetch=int(getattr(d, "prefetch", 1)), name=str(getattr(d, "preset", "gridded")))


def _reorder(reader: Era5Reader, want: GridLayout) -> Era5Reader:
    """A reader whose channels follow ``want`` (a permutation of a subset of its own)."""
    idx = [reader.layout.channels.index(c) for c in want.channels]
    base_read = reader.read

    def read(index):
        x = base_read(index)
        return x[idx] if x.ndim == 3 else x[:, idx]

    reader.read = read  # type: ignore[method-assign]
    reader.layout = GridLayout(want.channels, reader.layout.latitude, reader.layout.longitude, reader.layout.attrs)
    return reader


def _statistics(path: Path | None, reference: Era5Reader) -> Statistics:
    """The stored statistics, or (when absent) computed now from the reference and saved."""
    if path is not None and Path(path).is_file():
        return Statistics.load(path)
    stats = compute_statistics(reference.ds)
    if path is not None:
        try:
            stats.save(path)
        except OSError:
            pass
    return stats


__all__ = ["GriddedProblem", "ObservationReader", "load_gridded", "ar1_denoiser"]

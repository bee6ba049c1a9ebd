r"""What a run assimilates: inputs read from Zarr, a denoiser for them, and the output layout.

A ``Problem`` gives the filter plain tensors: the state shape ``S``, the initial state, the
observation of cycle ``k`` (``k = 1..K``), the truth for scoring (when known) and the fields to
write. A non-finite initial state is refused (``InputError`` naming the point); a non-finite
truth at a later time only leaves that cycle unscored. ``TwinProblem`` reads the twin stores written by ``diffda make-data`` (system parameters
from their attributes: a perfect-model twin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from .config import Config
from .diffusion.denoiser import Denoiser
from .diffusion.observation import Observation
from .diffusion.schedules import make_schedule
from .errors import InputError
from .models.gaussian import GaussianDenoiser
from .models.kde import KDEDenoiser


class Problem(Protocol):
    name: str
    state_shape: tuple[int, ...]
    times: np.ndarray
    denoiser: Denoiser
    history: int  # K: the denoiser conditions on the last K states (particles are [n, K, *S] when K > 1)

    @property
    def n_cycles(self) -> int: ...

    def initial_state(self) -> Tensor: ...

    def climatology(self, store: str | Path) -> object: ...  # filter.init_climatology, checked against the data

    def climatological_states(self, climatology: object, ids: Tensor, seed: int) -> Tensor: ...

    def observation(self, k: int) -> Observation: ...

    def truth(self, k: int) -> Tensor | None: ...

    def template(self, members: int | None) -> xr.Dataset: ...

    def fields(self, mean: Tensor, spread: Tensor, members: Tensor | None) -> dict[str, np.ndarray]: ...

    def dims(self, members: bool) -> dict[str, tuple[str, ...]]: ...


def _open(path: Path, what: str) -> xr.Dataset:
    if not path.exists():
        raise InputError(f"{what} store {path} not found; make it with `diffda make-data PRESET --out {path.parent}`")
    return xr.open_zarr(path)


@dataclass
class TwinProblem:
    name: str
    state_shape: tuple[int, ...]
    times: np.ndarray
    denoiser: Denoiser
    truth_values: Tensor  # [K + 1, D]
    obs_values: Tensor  # [K, D]
    noise_variance: float
    operator: str
    attrs: dict
    device: torch.device
    dtype: torch.dtype
    history: int = 1
    initial_time: object = None  # the truth time of cycle 0

    @property
    def n_cycles(self) -> int:
        return len(self.times)

    def initial_state(self) -> Tensor:
        """The truth at cycle 0; an ``InputError`` naming the first non-finite component."""
        x0 = self.truth_values[0]
        bad = torch.nonzero(~torch.isfinite(x0)).flatten()
        if bad.numel():
            from .data.era5 import fmt_time

            raise InputError(f"the initial state is not finite: {self.name} at time {fmt_time(self.initial_time)}, "
                             f"component {int(bad[0])} ({bad.numel()} value(s) NaN or infinite); fix truth.zarr "
                             "or start the window elsewhere (run.start)")
        return x0.to(self.device, self.dtype)

    def climatology(self, store: str | Path) -> Tensor:
        """``store`` (a twin data directory of the same system, or its ``truth.zarr``: ``diffda make-data``
        with another ``seed``) as a source of initial states: its truth ``[T, D]``, float64 on the CPU; an
        ``InputError`` naming what differs and the fix."""
        from .data.twins import params_of, system_of

        what = f"filter.init_climatology={store}"
        path = Path(store) / "truth.zarr" if (Path(store) / "truth.zarr").is_dir() else Path(store)
        preset = self.attrs["preset"]
        make = f"make one with `diffda make-data {preset} --out DIR --set seed=1` and the data's system keys"
        if not (path / "zarr.json").exists() and not (path / ".zattrs").exists():
            raise InputError(f"{what}: no twin store there; {make}")
        ds = xr.open_zarr(path)
        if ds.attrs.get("preset") != preset or "x" not in ds:
            raise InputError(f"{what} holds no {preset} twin (preset={ds.attrs.get('preset')!r}); {make}")
        want, have = system_of(preset, params_of(self.attrs)), system_of(preset, params_of(dict(ds.attrs)))
        if have != want:
            diff = ", ".join(f"{k}={have.get(k)!r} (data: {want.get(k)!r})" for k in want if have.get(k) != want.get(k))
            raise InputError(f"{what} is another system: {diff}; {make}")
        x = torch.from_numpy(ds.x.values).double()
        if len(x) < self.history:
            raise InputError(f"{what} holds {len(x)} time(s); a member needs {self.history} consecutive ones")
        return x

    def climatological_states(self, climatology: Tensor, ids: Tensor, seed: int) -> Tensor:
        """Particle ``i``'s initial state: the ``history`` consecutive states of ``climatology`` ``[T, D]``
        ending at the time index ``t_i`` of :func:`~pipeline.rng.climatology_times`, as on grids (particle
        ``i``'s own stream: independent of the rank holding it). ``[n, D]`` or ``[n, K, D]``; an
        ``InputError`` naming the time of a non-finite draw."""
        from .rng import climatology_times

        k, out = self.history, []
        for t in climatology_times(seed, ids, k, len(climatology)):
            x = climatology[t - k + 1:t + 1]
            if not torch.isfinite(x).all():
                raise InputError(f"a climatological initial state is not finite: time index {t} of "
                                 "filter.init_climatology; choose another run.seed or clean the store")
            out.append(x if k > 1 else x[0])
        if not out:
            return torch.zeros((0, *([k] if k > 1 else []), *self.state_shape), device=self.device, dtype=self.dtype)
        return torch.stack(out).to(self.device, self.dtype)

    def observation(self, k: int) -> Observation:
        return Observation.from_field(self.obs_values[k - 1].to(self.device, self.dtype), self.noise_variance, self.operator)

    def truth(self, k: int) -> Tensor:
        return self.truth_values[k].to(self.device, self.dtype)

    def template(self, members: int | None) -> xr.Dataset:
        d = self.state_shape[0]
        coords = {"component": np.arange(d)}
        data = {self.name: (("component",), np.zeros(d)), f"{self.name}_spread": (("component",), np.zeros(d))}
        if members:
            coords["member"] = np.arange(members)
            data[f"{self.name}_members"] = (("member", "component"), np.zeros((members, d)))
        return xr.Dataset(data, coords=coords)

    def dims(self, members: bool) -> dict[str, tuple[str, ...]]:
        out = {self.name: ("component",), f"{self.name}_spread": ("component",)}
        if members:
            out[f"{self.name}_members"] = ("member", "component")
        return out

    def fields(self, mean: Tensor, spread: Tensor, members: Tensor | None) -> dict[str, np.ndarray]:
        out = {self.name: mean.double().cpu().numpy(), f"{self.name}_spread": spread.double().cpu().numpy()}
        if members is not None:
            out[f"{self.name}_members"] = members.double().cpu().numpy()
        return out


def load_twin(cfg: Config, data_dir: Path, device: torch.device, dtype: torch.dtype) -> TwinProblem:
    """Read ``truth.zarr``/``observations.zarr`` and build the configured denoiser."""
    from .data.twins import dynamics_for, params_of, simulate

    truth = _open(data_dir / "truth.zarr", "truth")
    obs = _open(data_dir / "observations.zarr", "observations")
    preset = truth.attrs.get("preset")
    if preset not in ("linear", "lorenz96", "lorenz63"):
        raise InputError(f"{data_dir}/truth.zarr is not a twin store (attribute preset={preset!r})")
    if preset != cfg.data.preset:
        raise InputError(
            f"data.preset={cfg.data.preset} but {data_dir} holds a {preset} twin; "
            f"set --set data.preset={preset} or point --data at {cfg.data.preset} data")
    for name, ds in (("truth", truth), ("observations", obs)):
        if "x" not in ds:
            raise InputError(f"{data_dir}/{name}.zarr has no variable 'x'; remake it with diffda make-data")
    if truth.sizes["component"] != obs.sizes["component"]:
        raise InputError(f"truth has {truth.sizes['component']} components but observations {obs.sizes['component']}")
    if not np.array_equal(truth.time.values[1:], obs.time.values):
        raise InputError("observation times must be the truth times after cycle 0 (one per cycle, no gaps)")
    truth_values = torch.from_numpy(truth.x.values).double()
    obs_values = torch.from_numpy(obs.x.values).double()
    params = params_of(truth.attrs)
    start = cfg.run.start
    if start >= len(obs.time):
        raise InputError(f"run.start={start} but the observations hold only {len(obs.time)} cycles")
    cycles = cfg.run.cycles or len(obs.time) - start
    if start + cycles > len(obs.time):
        raise InputError(f"run.start={start} + run.cycles={cycles} but the observations hold only {len(obs.time)} cycles")
    truth_values, obs_values = truth_values[start:], obs_values[start:]  # a window: cycle k is data cycle start+k
    schedule = make_schedule(cfg.schedule.kind, **cfg.schedule.params)
    dynamics = dynamics_for(preset, params)
    if cfg.model.kind == "gaussian":
        denoiser: Denoiser = GaussianDenoiser(schedule, dynamics, params["q"])
    elif cfg.model.kind == "kde":
        if cfg.model.bandwidth == "cv":
            raise InputError("model.bandwidth=cv is diffda smooth's (the window prior's cross-validation); for the "
                             "filter's transition KDE give a factor (e.g. model.bandwidth=0.5) or leave it unset")
        g = torch.Generator().manual_seed(10_000 + cfg.run.seed)
        traj = simulate(preset, params, cfg.model.archive, g)  # an archive run, independent of the truth
        denoiser = KDEDenoiser(schedule, traj[:-1].to(device, dtype), traj[1:].to(device, dtype), cfg.model.bandwidth)
    else:
        raise InputError(f"model={cfg.model.kind}: diffda run on a twin takes model=gaussian or model=kde "
                         f"(model=neural on a twin is diffda smooth's trained window prior)")
    return TwinProblem(
        name="x", state_shape=(truth.sizes["component"],), times=obs.time.values[start:start + cycles],
        denoiser=denoiser, truth_values=truth_values[: cycles + 1], obs_values=obs_values[:cycles],
        noise_variance=float(obs.attrs.get("noise_variance", params["r"])), operator=str(params["operator"]),
        attrs=dict(truth.attrs), device=device, dtype=dtype, initial_time=truth.time.values[start],
    )

r"""Twin experiments with the data path of the real system: truth and observations as Zarr.

Presets (keys settable with ``--set key=value``; defaults below):

- ``linear``:   ``x' = a S x + N(0, q I)``, ``S`` circulant ``(c, 1-2c, c)``; ``y`` observes every
  ``stride``-th component with noise variance ``r``.
- ``lorenz96``: ``F = 8``, ``dim = 40``, ``steps = 1`` RK4 step of ``dt = 0.05`` per cycle (DAPPER
  ``sakov2008``), all components observed with ``r = 1``; ``steps = 2``: observations every 0.1 time units.
- ``lorenz63``: ``sigma, rho, beta = 10, 28, 8/3``, one cycle = ``steps = 25`` RK4 steps of ``dt = 0.01``
  (0.25 time units), all components observed with ``r = 2`` (DAPPER ``sakov2012``); ``steps = 10``:
  every 0.1 time units, the KDE seed's setting (preset ``lorenz63-kde``).
- every preset: ``components`` (a list of component indices) observes those components instead of
  every ``stride``-th one, e.g. ``components=[2]`` for Lorenz-63's ``x3`` alone.
- Lorenz presets: additive model noise of variance ``q`` per cycle, observation operator
  ``operator`` in (identity, abs, square, arctan).

Stores: ``truth.zarr`` holds ``x`` over ``(time, component)`` for cycles ``0..K`` and the system
parameters in its attributes; ``observations.zarr`` holds ``x`` over ``(time, component)`` for
cycles ``1..K`` with NaN where unobserved, and ``operator``/``r`` in its attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..diffusion.observation import OPERATORS, apply_fn
from ..errors import DiffdaError
from ..models.dynamics import Linear, Lorenz63, Lorenz96
from .atomic import write_atomic

DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": dict(dim=16, a=0.95, c=0.25, q=0.1, r=0.25, stride=2, cycles=100, seed=0, operator="identity", components=None),
    "lorenz96": dict(dim=40, F=8.0, steps=1, q=0.1, r=1.0, stride=1, cycles=200, seed=0, operator="identity", components=None),
    "lorenz63": dict(F=None, steps=25, q=0.1, r=2.0, stride=1, cycles=200, seed=0, operator="identity", components=None),
}
CYCLE_HOURS = 6
START = "2000-01-01T00:00"


def twin_params(preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``preset`` updated with ``overrides``; unknown keys and bad values raise."""
    if preset not in DEFAULTS:
        raise DiffdaError(f"unknown twin preset {preset!r}; choose one of {sorted(DEFAULTS)}")
    params = dict(DEFAULTS[preset])
    for key, value in (overrides or {}).items():
        if key not in params:
            raise DiffdaError(f"make-data {preset}: unknown key {key!r}; valid keys: {', '.join(sorted(params))}")
        params[key] = value
    if preset == "lorenz63":
        params.pop("F")
        params["dim"] = 3
    for key in ("dim", "stride", "cycles", "seed", *(("steps",) if "steps" in params else ())):
        if not isinstance(params[key], int) or params[key] < (0 if key == "seed" else 1):
            raise DiffdaError(f"make-data {preset}: {key} must be a positive integer (got {params[key]!r})")
    for key in ("q", "r"):
        if not isinstance(params[key], (int, float)) or params[key] < 0 or (key == "r" and params[key] == 0):
            raise DiffdaError(f"make-data {preset}: {key} must be a {'positive' if key == 'r' else 'non-negative'} number (got {params[key]!r})")
        params[key] = float(params[key])
    if params["operator"] not in OPERATORS:
        raise DiffdaError(f"make-data {preset}: operator must be one of {OPERATORS} (got {params['operator']!r})")
    comps = params["components"]
    if comps is not None:
        if (not isinstance(comps, (list, tuple)) or not comps
                or not all(isinstance(c, int) and 0 <= c < params["dim"] for c in comps)):
            raise DiffdaError(f"make-data {preset}: components must be a non-empty list of indices in "
                              f"[0, {params['dim']}) (got {comps!r})")
        params["components"] = sorted(set(int(c) for c in comps))
    if preset == "lorenz96" and params["dim"] < 4:
        raise DiffdaError("make-data lorenz96: dim must be at least 4")
    return params


def params_of(attrs: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a twin store from its ``truth.zarr`` attributes (as :func:`make_twin` wrote them)."""
    preset = attrs["preset"]
    return twin_params(preset, {k: attrs[k] for k in attrs if k not in ("preset", "cycle_hours", "dim")
                                or (k == "dim" and preset != "lorenz63")})


SYSTEM_KEYS = {"linear": ("dim", "a", "c", "q"), "lorenz96": ("dim", "F", "steps", "q"), "lorenz63": ("dim", "steps", "q")}


def system_of(preset: str, params: dict[str, Any]) -> dict[str, Any]:
    """The keys that define the chain ``x' = m(x) + N(0, q I)`` (not its observations): ``{"preset", ...}``."""
    return {"preset": preset, **{k: params[k] for k in SYSTEM_KEYS[preset]}}


def dynamics_for(preset: str, params: dict[str, Any]):
    """The map ``m`` of a preset with its parameters."""
    if preset == "linear":
        return Linear(a=float(params["a"]), c=float(params["c"]))
    if preset == "lorenz96":
        return Lorenz96(F=float(params["F"]), steps=int(params.get("steps", 1)))
    if preset == "lorenz63":
        return Lorenz63(steps=int(params.get("steps", 25)))
    raise DiffdaError(f"unknown twin preset {preset!r}")


def initial_state(preset: str, params: dict[str, Any], g: torch.Generator) -> torch.Tensor:
    """A state on the attractor (Lorenz: spun up 1000 cycles without noise) or the stationary law."""
    dim = params["dim"]
    if preset == "linear":
        var = params["q"] / max(1 - params["a"] ** 2, 1e-6)
        return torch.randn(1, dim, generator=g, dtype=torch.float64) * var**0.5
    m = dynamics_for(preset, params)
    x = torch.randn(1, dim, generator=g, dtype=torch.float64) + (params.get("F") or 0.0)
    if preset == "lorenz63":
        x = x + torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64)
    for _ in range(1000):
        x = m(x)
    return x


def simulate(preset: str, params: dict[str, Any], steps: int, g: torch.Generator, x0: torch.Tensor | None = None) -> torch.Tensor:
    """A trajectory ``[steps + 1, D]`` of ``x' = m(x) + N(0, q I)``."""
    m = dynamics_for(preset, params)
    x = initial_state(preset, params, g) if x0 is None else x0.reshape(1, -1)
    out = [x[0]]
    for _ in range(steps):
        x = m(x) + params["q"] ** 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        out.append(x[0])
    return torch.stack(out)


def simulate_chains(preset: str, params: dict[str, Any], chains: int, steps: int, g: torch.Generator,
                    spinup: int = 300) -> torch.Tensor:
    """``chains`` independent trajectories ``[C, steps + 1, D]``, integrated as one batch (Lorenz: each
    spun up ``spinup`` noisy cycles from a perturbed start; linear: the stationary law)."""
    m, dim = dynamics_for(preset, params), params["dim"]
    noise = lambda x: params["q"] ** 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)  # noqa: E731
    if preset == "linear":
        x = torch.randn(chains, dim, generator=g, dtype=torch.float64) * (params["q"] / max(1 - params["a"] ** 2, 1e-6)) ** 0.5
    else:
        x = torch.randn(chains, dim, generator=g, dtype=torch.float64) + (params.get("F") or 0.0)
        if preset == "lorenz63":
            x = x + torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64)
        for _ in range(spinup):
            x = m(x) + noise(x)
    out = [x]
    for _ in range(steps):
        x = m(x) + noise(x)
        out.append(x)
    return torch.stack(out, 1)


def observation_mask(params: dict[str, Any]) -> np.ndarray:
    """Boolean ``[D]``: the listed ``components``, else every ``stride``-th component, observed."""
    mask = np.zeros(params["dim"], dtype=bool)
    if params.get("components") is not None:
        mask[list(params["components"])] = True
    else:
        mask[:: params["stride"]] = True
    return mask


def make_twin(preset: str, out_dir: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out_dir/truth.zarr`` and ``out_dir/observations.zarr``; return the parameters."""
    params = twin_params(preset, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(int(params["seed"]))
    truth = simulate(preset, params, params["cycles"], g)
    hx = apply_fn(params["operator"], truth[1:])
    y = hx + params["r"] ** 0.5 * torch.randn(hx.shape, generator=g, dtype=torch.float64)
    y[:, ~torch.from_numpy(observation_mask(params))] = float("nan")
    times = pd.date_range(START, periods=params["cycles"] + 1, freq=f"{CYCLE_HOURS}h")
    attrs = {"preset": preset, "cycle_hours": CYCLE_HOURS, **{k: v for k, v in params.items()}}
    component = np.arange(params["dim"])
    truth_ds = xr.Dataset(
        {"x": (("time", "component"), truth.numpy(), {"long_name": f"{preset} state", "units": "1"})},
        coords={"time": times, "component": component}, attrs=attrs,
    )
    obs_ds = xr.Dataset(
        {"x": (("time", "component"), y.numpy(), {"long_name": f"observed {params['operator']}(x)", "units": "1"})},
        coords={"time": times[1:], "component": component},
        attrs={**attrs, "noise_variance": params["r"]},
    )
    write_atomic(truth_ds, out / "truth.zarr")
    write_atomic(obs_ds, out / "observations.zarr")
    return params



r"""A real atmosphere on the sphere: Held–Suarez with dinosaur's primitive-equation dycore.

``diffda make-data sphere --out DIR [--set key=value ...]`` writes ``DIR/truth.zarr`` (an
ERA5/WeatherBench2-layout store) and ``DIR/observations.zarr`` (temperature, thinned, noisy,
NaN elsewhere).

Why dinosaur and not torch-harmonics' shallow-water solver: the filter and the emulator are meant
for ERA5's pressure-level fields, and a shallow-water model has one layer and no temperature.
dinosaur (Google's JAX spectral dycore, CPU JAX) integrates the dry primitive equations in sigma
coordinates; composed with Held & Suarez (1994)'s forcing (Newtonian relaxation to a zonally
symmetric radiative-equilibrium temperature, Rayleigh friction in the boundary layer) it has a
statistically steady general circulation: baroclinic eddies, two mid-latitude jets, a poleward
heat flux. It is chaotic, so the emulator has something to learn and the filter something to track.

Model. T21 spectral truncation (a 64×32 Gaussian grid), ``layers`` (8) equidistant sigma levels,
flat surface, the IMEX ``imex_rk_sil3`` step of ``dt_minutes`` (60) with dinosaur's exponential
spectral filter (``tau = 0.0087504, order = 1.5, cutoff = 0.8``, from its Held–Suarez notebook),
starting from an isothermal (288 K) atmosphere at rest with a small surface-pressure bump
(``p1 = 50 hPa``, placed by the PRNG key ``seed``), and run ``spinup_days`` before the first
output (the climate is steady by day 100–150).

A shipped spun-up state. Spinning up 150 days takes ~20 s of integration plus compilation, so
``pipeline/data/sphere_init.npz`` holds the modal state after ``SHIPPED_SPINUP`` (150) days from
rest (``seed = 0``, ``dt_minutes = 60``, ``layers = 8``); it was made by
``python -m pipeline.data.sphere --make-init`` (which reruns exactly that) and is used whenever
``spinup_days >= SHIPPED_SPINUP`` and the model settings match: the state is perturbed by
``seed`` (Gaussian temperature noise of ``perturbation`` K, 0.1 by default, at every grid
point and level, from ``numpy.random.default_rng(seed)``) and integrated the remaining
``spinup_days - 150`` days (40 by default: the temperature difference between two seeds grows
from 0.3 K to the climatological 4.5 K of two unrelated states within about 25 days, so the default
data, seed 0, is unrelated to a training run of another seed at the same model days).
``--set init=rest`` always spins up from rest, the bump placed by ``seed`` (the path that made
the shipped state, with ``seed=0 spinup_days=150``).

Output grid. The fields are spectral, so they are evaluated, exactly (no interpolation), on the
WeatherBench2 64×32 equiangular grid: latitude ascending −87.1875 .. 87.1875 in 5.625° steps (no
poles), longitude 0 .. 354.375. Pressure levels (``levels``, hPa, default 250, 500, 850): linear in
``ln p`` between the sigma-level centres of each column, ``p = sigma * p_s``; a level outside the
model's sigma range (about 65 to 890 hPa with 8 levels) has no value and is refused.
Geopotential is the hydrostatic integral of temperature on sigma levels from a flat surface
(dinosaur's ``get_geopotential_on_sigma``).

Stores. ``truth.zarr``: ``temperature`` (K), ``geopotential`` (m² s⁻²), ``u_component_of_wind``,
``v_component_of_wind`` (m s⁻¹), float32 over ``(time, level, latitude, longitude)``; ``time``
6-hourly from 2000-01-01T00 (an invented calendar: Held–Suarez has no seasons or diurnal cycle)
for ``4 days + 1`` times; CF attributes; root attributes name the source and every parameter.
``observations.zarr`` (built by :func:`pipeline.data.observe.build_observations`, noise seeded by
``seed``): temperature at every level on every ``obs_stride``-th grid point in latitude and
longitude (default 2: a quarter of the grid), plus noise of std ``obs_std`` (1 K), NaN elsewhere,
for times ``1 ..`` (cycle 0 is the initial state); ``noise_std`` in its attributes.
Weak points: flat surface, no moisture, no seasons, jets at ~30–36° rather than ~45°.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiffdaError
from .atomic import write_atomic, write_file

DEFAULTS: dict[str, Any] = dict(
    days=30,
    seed=0,
    spinup_days=190,
    dt_minutes=60,
    levels=[250, 500, 850],
    layers=8,
    init="auto",  # auto (shipped state when it fits) | rest
    perturbation=0.1,
    obs_variables=["temperature"],
    obs_levels=None,  # None: every level of the truth
    obs_stride=2,
    obs_stations=None,  # None: every thinned point; a count: a random subset of them
    obs_station_seed=None,  # None: seed
    obs_std=1.0,  # one std for every observed variable (its own units), or {variable: std}
    chunk_time=8,
    truth="dinosaur",  # dinosaur | emulator (a perfect-model twin: pipeline/data/sphere_emulator.py)
    checkpoint=None,  # truth=emulator: checkpoint directory; None = the shipped sphere64x32
    sampler_steps=16,  # truth=emulator: reverse-diffusion steps per 6-hour step
)
SHIPPED_SPINUP = 150
INIT_FILE = Path(__file__).with_name("sphere_init.npz")
START = "2000-01-01T00:00"
CYCLE_HOURS = 6
P0_PA, P1_PA, TREF_K = 1e5, 5e3, 288.0
FILTER = dict(tau=0.0087504, order=1.5, cutoff=0.8)

VARIABLES = {
    "temperature": dict(units="K", long_name="Temperature", standard_name="air_temperature"),
    "geopotential": dict(units="m**2 s**-2", long_name="Geopotential", standard_name="geopotential"),
    "u_component_of_wind": dict(units="m s**-1", long_name="U component of wind", standard_name="eastward_wind"),
    "v_component_of_wind": dict(units="m s**-1", long_name="V component of wind", standard_name="northward_wind"),
}


def sphere_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults updated with ``overrides``; unknown keys and bad values raise :class:`DiffdaError`."""
    params = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}
    for key, value in (overrides or {}).items():
        if key not in params:
            raise DiffdaError(f"make-data sphere: unknown key {key!r}; valid keys: {', '.join(sorted(params))}")
        params[key] = value
    lv = params["levels"]
    if isinstance(lv, (int, float)):
        lv = [lv]
    if isinstance(lv, str):
        lv = [x for x in lv.replace("[", "").replace("]", "").replace(",", " ").split()]
    try:
        levels = sorted({int(float(x)) for x in lv})
    except (TypeError, ValueError):
        raise DiffdaError(f"make-data sphere: levels must be a list of pressures in hPa (got {params['levels']!r})") from None
    if not levels or any(not 0 < x < 1100 for x in levels):
        raise DiffdaError(f"make-data sphere: levels must be pressures in hPa between 0 and 1100 (got {levels})")
    params["levels"] = levels
    for key, low in (("days", 1), ("seed", 0), ("spinup_days", 0), ("dt_minutes", 1), ("layers", 2),
                     ("obs_stride", 1), ("chunk_time", 1)):
        v = params[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise DiffdaError(f"make-data sphere: {key} must be an integer >= {low} (got {params[key]!r})")
        params[key] = v
    if (6 * 60) % params["dt_minutes"]:
        raise DiffdaError(f"make-data sphere: dt_minutes must divide 360 (6 hours) (got {params['dt_minutes']})")
    v = params["perturbation"]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise DiffdaError(f"make-data sphere: perturbation must be a non-negative number (got {v!r})")
    params["perturbation"] = float(v)
    if params["init"] not in ("auto", "rest"):
        raise DiffdaError(f"make-data sphere: init must be 'auto' or 'rest' (got {params['init']!r})")
    if params["truth"] not in ("dinosaur", "emulator"):
        raise DiffdaError(f"make-data sphere: truth must be 'dinosaur' or 'emulator' (got {params['truth']!r})")
    steps = params["sampler_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DiffdaError(f"make-data sphere: sampler_steps must be an integer >= 1 (got {steps!r})")
    if params["checkpoint"] is not None and not isinstance(params["checkpoint"], str):
        raise DiffdaError(f"make-data sphere: checkpoint must be a directory path (got {params['checkpoint']!r})")
    _observation_params(params)
    return params


def _names(value: Any, key: str) -> list:
    """A list from a YAML list, a scalar, or a comma/space separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [x for x in value.replace("[", "").replace("]", "").replace(",", " ").split()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise DiffdaError(f"make-data sphere: {key} must be a list (got {value!r})")


def _observation_params(params: dict[str, Any]) -> None:
    """Validate the observation-network keys in place (messages name the key)."""
    variables = [str(v) for v in _names(params["obs_variables"], "obs_variables")]
    unknown = [v for v in variables if v not in VARIABLES]
    if not variables or unknown:
        raise DiffdaError(f"make-data sphere: obs_variables must name some of {', '.join(VARIABLES)} "
                          f"(got {params['obs_variables']!r})")
    params["obs_variables"] = list(dict.fromkeys(variables))
    if params["obs_levels"] is not None:
        try:
            lv = sorted({int(float(x)) for x in _names(params["obs_levels"], "obs_levels")})
        except (TypeError, ValueError):
            raise DiffdaError(f"make-data sphere: obs_levels must be pressures in hPa (got {params['obs_levels']!r})") from None
        absent = [x for x in lv if x not in params["levels"]]
        if not lv or absent:
            raise DiffdaError(f"make-data sphere: obs_levels {lv} must be among levels {params['levels']} "
                              f"(got {params['obs_levels']!r})")
        params["obs_levels"] = lv
    k = params["obs_stride"]
    candidates = -(-32 // k) * -(-64 // k)  # ceil(32/k) * ceil(64/k) thinned points
    for key in ("obs_stations", "obs_station_seed"):
        v = params[key]
        if v is None:
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        low = 1 if key == "obs_stations" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise DiffdaError(f"make-data sphere: {key} must be an integer >= {low} or null (got {params[key]!r})")
        params[key] = v
    if params["obs_stations"] is not None and params["obs_stations"] > candidates:
        raise DiffdaError(f"make-data sphere: obs_stations={params['obs_stations']} exceeds the {candidates} grid "
                          f"points left by obs_stride={k}; lower obs_stations or obs_stride")
    std = params["obs_std"]
    if isinstance(std, dict):
        missing = [v for v in params["obs_variables"] if v not in std]
        extra = [v for v in std if v not in params["obs_variables"]]
        if missing or extra:
            raise DiffdaError(f"make-data sphere: obs_std needs one entry per observed variable "
                              f"({', '.join(params['obs_variables'])}); missing {missing}, not observed {extra}")
        std = {str(v): s for v, s in std.items()}
    else:
        std = {v: std for v in params["obs_variables"]}
    for v, s in std.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0:
            raise DiffdaError(f"make-data sphere: obs_std must be a positive number or a mapping "
                              f"{{variable: positive number}} (got {params['obs_std']!r} for {v})")
    params["obs_std"] = {v: float(s) for v, s in std.items()} if isinstance(params["obs_std"], dict) \
        else float(params["obs_std"])


def _import_dinosaur():
    try:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax  # noqa: F401
        import dinosaur  # noqa: F401
    except ImportError as err:
        raise DiffdaError("make-data sphere needs dinosaur and jax (pinned in env/requirements-cpu.txt); "
                          f"run `bash env/setup.sh` ({err})") from None
    return jax, dinosaur


class HeldSuarez:
    """dinosaur's Held–Suarez set-up at T21 with ``layers`` sigma levels, step ``dt_minutes``."""

    def __init__(self, layers: int = 8, dt_minutes: int = 60):
        jax, dinosaur = _import_dinosaur()
        import jax.numpy as jnp

        self.jax, self.jnp, self.dino = jax, jnp, dinosaur
        sh = dinosaur.spherical_harmonic
        self.units = dinosaur.scales.units
        self.layers, self.dt_minutes = layers, dt_minutes
        self.coords = dinosaur.coordinate_systems.CoordinateSystem(
            horizontal=sh.Grid.T21(), vertical=dinosaur.sigma_coordinates.SigmaCoordinates.equidistant(layers))
        # the WeatherBench2 64x32 grid: same spectral basis, equiangular nodes without poles
        self.out_grid = sh.Grid.T21(latitude_spacing="equiangular")
        self.specs = dinosaur.primitive_equations.PrimitiveEquationsSpecs.from_si()
        u = self.units
        init_fn, aux = dinosaur.primitive_equations_states.isothermal_rest_atmosphere(
            coords=self.coords, physics_specs=self.specs, tref=TREF_K * u.degK, p0=P0_PA * u.pascal, p1=P1_PA * u.pascal)
        self._init_fn = init_fn
        self.ref_temps = aux[dinosaur.xarray_utils.REF_TEMP_KEY]
        orography = dinosaur.primitive_equations.truncated_modal_orography(
            aux[dinosaur.xarray_utils.OROGRAPHY], self.coords)
        primitive = dinosaur.primitive_equations.PrimitiveEquations(self.ref_temps, orography, self.coords, self.specs)
        forcing = dinosaur.held_suarez.HeldSuarezForcing(
            coords=self.coords, physics_specs=self.specs, reference_temperature=self.ref_temps, p0=P0_PA * u.pascal)
        equations = dinosaur.time_integration.compose_equations([primitive, forcing])
        dt = self.specs.nondimensionalize(dt_minutes * u.minute)
        ti = dinosaur.time_integration
        step = ti.step_with_filters(ti.imex_rk_sil3(equations, dt),
                                    [ti.exponential_step_filter(self.coords.horizontal, dt, **FILTER)])
        inner = (CYCLE_HOURS * 60) // dt_minutes
        self.steps_per_day = 4 * inner
        self._advance_6h = jax.jit(ti.repeated(step, inner))
        self._advance_day = jax.jit(ti.repeated(step, 4 * inner))
        self._diagnose = jax.jit(self._diagnose_impl)

    # -- states ---------------------------------------------------------------------------------
    def rest_state(self, seed: int):
        return self._init_fn(self.jax.random.PRNGKey(seed))

    def state_to_arrays(self, state) -> dict[str, np.ndarray]:
        keys = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")
        return {k: np.asarray(getattr(state, k)) for k in keys}

    def state_from_arrays(self, arrays: dict[str, np.ndarray]):
        State = self.dino.primitive_equations.State
        return State(**{k: self.jnp.asarray(arrays[k]) for k in
                        ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")})

    def perturb(self, state, seed: int, kelvin: float):
        """Add Gaussian temperature noise of std ``kelvin`` at every node (``default_rng(seed)``)."""
        if kelvin <= 0:
            return state
        grid = self.coords.horizontal
        noise = np.random.default_rng(seed).standard_normal((self.layers, *grid.nodal_shape)).astype(np.float32)
        dT = self.specs.nondimensionalize(kelvin * self.units.degK) * noise
        arrays = self.state_to_arrays(state)
        arrays["temperature_variation"] = arrays["temperature_variation"] + np.asarray(grid.to_modal(self.jnp.asarray(dT)))
        return self.state_from_arrays(arrays)

    def run_days(self, state, days: int):
        for _ in range(days):
            state = self._advance_day(state)
        return state

    # -- diagnostics on sigma levels, on the output grid ------------------------------------------
    def _diagnose_impl(self, state):
        """Nodal ``T`` (K), ``Phi`` (m²/s²), ``u``, ``v`` (m/s) ``[L, lon, lat]`` and ``p_s`` (Pa) ``[lon, lat]``."""
        d, g, jnp = self.dino, self.out_grid, self.jnp
        t_var = g.to_nodal(state.temperature_variation)
        temperature = t_var + self.ref_temps[:, None, None]
        u, v = d.spherical_harmonic.vor_div_to_uv_nodal(g, state.vorticity, state.divergence)
        phi = d.primitive_equations.get_geopotential_on_sigma(
            temperature, nodal_orography=jnp.zeros(g.nodal_shape), sigma=self.coords.vertical,
            gravity_acceleration=self.specs.gravity_acceleration, ideal_gas_constant=self.specs.ideal_gas_constant)
        log_ps = g.to_nodal(state.log_surface_pressure)[0]
        return temperature, phi, u, v, jnp.exp(log_ps)

    def diagnose(self, state) -> dict[str, np.ndarray]:
        T, phi, u, v, ps = self._diagnose(state)
        dim = lambda x, unit: np.asarray(self.specs.dimensionalize(np.asarray(x, dtype=np.float64), unit).m)  # noqa: E731
        un = self.units
        return {"temperature": dim(T, un.degK), "geopotential": dim(phi, un.m**2 / un.s**2),
                "u_component_of_wind": dim(u, un.m / un.s), "v_component_of_wind": dim(v, un.m / un.s),
                "surface_pressure": dim(ps, un.pascal)}

    @property
    def sigma_centers(self) -> np.ndarray:
        return np.asarray(self.coords.vertical.centers, dtype=np.float64)


def to_pressure_levels(fields: dict[str, np.ndarray], sigma: np.ndarray, levels_hpa: list[int]) -> dict[str, np.ndarray]:
    """Sigma-level fields ``[L, lon, lat]`` -> ``[P, lat, lon]`` on pressure levels (linear in ln p).

    NaN where a level lies outside ``[sigma_0 p_s, sigma_{L-1} p_s]`` in a column.
    """
    ps = fields["surface_pressure"]  # [lon, lat], Pa
    ln_sigma = np.log(sigma)  # ascending
    out = {}
    target = np.log(np.asarray(levels_hpa, dtype=np.float64)[:, None, None] * 100.0 / ps[None])  # ln(p/ps) [P, lon, lat]
    idx = np.clip(np.searchsorted(ln_sigma, target, side="right") - 1, 0, len(sigma) - 2)
    lo, hi = ln_sigma[idx], ln_sigma[idx + 1]
    w = (target - lo) / (hi - lo)
    outside = (target < ln_sigma[0] - 1e-9) | (target > ln_sigma[-1] + 1e-9)
    for name in VARIABLES:
        f = fields[name]
        f_lo = np.take_along_axis(f, idx, axis=0)
        f_hi = np.take_along_axis(f, idx + 1, axis=0)
        val = (1 - w) * f_lo + w * f_hi
        val[outside] = np.nan
        out[name] = np.ascontiguousarray(val.transpose(0, 2, 1)).astype(np.float32)  # [P, lat, lon]
    return out


def initial_state(model: HeldSuarez, params: dict[str, Any], log=None) -> tuple[Any, str]:
    """The state at ``spinup_days`` and a sentence saying how it was made."""
    spin = params["spinup_days"]
    shipped_fits = (params["init"] == "auto" and spin >= SHIPPED_SPINUP and INIT_FILE.exists())
    if shipped_fits:
        with np.load(INIT_FILE) as f:
            meta_ok = (int(f["layers"]) == model.layers and int(f["dt_minutes"]) == model.dt_minutes
                       and int(f["spinup_days"]) == SHIPPED_SPINUP)
            arrays = {k: f[k] for k in f.files}
        shipped_fits = meta_ok
    if shipped_fits:
        state = model.perturb(model.state_from_arrays(arrays), params["seed"], params["perturbation"])
        state = model.run_days(state, spin - SHIPPED_SPINUP)
        how = (f"shipped state after {SHIPPED_SPINUP} days from rest ({INIT_FILE.name}), perturbed by seed "
               f"{params['seed']} ({params['perturbation']} K), then {spin - SHIPPED_SPINUP} more days")
        return state, how
    state = model.run_days(model.rest_state(params["seed"]), spin)
    return state, f"isothermal rest (seed {params['seed']}) spun up {spin} days"


def simulate(params: dict[str, Any], log=print, times: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fields ``[T, P, lat, lon]`` (float32) for ``times`` (default ``4 days + 1``) times and the run's attributes."""
    tic = time.perf_counter()
    model = HeldSuarez(params["layers"], params["dt_minutes"])
    state, how = initial_state(model, params)
    spin_s = time.perf_counter() - tic
    n = 4 * params["days"] + 1 if times is None else times
    out = {name: np.empty((n, len(params["levels"]), 32, 64), dtype=np.float32) for name in VARIABLES}
    sigma = model.sigma_centers
    for k in range(n):
        if k:
            state = model._advance_6h(state)
        fields = to_pressure_levels(model.diagnose(state), sigma, params["levels"])
        for name in VARIABLES:
            out[name][k] = fields[name]
    bad = sorted({f"{name}@{lv}" for name in VARIABLES for j, lv in enumerate(params["levels"])
                  if np.isnan(out[name][:, j]).any()})
    if bad:
        p_top, p_bot = 100 * sigma[0] * 1.05, sigma[-1] * 950
        raise DiffdaError(f"make-data sphere: levels outside the model's vertical range in some columns ({', '.join(bad)}); "
                          f"with {params['layers']} sigma levels choose pressures between about {p_top:.0f} and "
                          f"{p_bot:.0f} hPa, or raise layers")
    if not np.isfinite(out["temperature"]).all() or np.abs(out["temperature"] - 250).max() > 150:
        raise DiffdaError("make-data sphere: the model blew up (non-finite or absurd temperatures); lower dt_minutes")
    attrs = {"spinup_from": how, "seconds_spinup": round(spin_s, 2),
             "seconds_total": round(time.perf_counter() - tic, 2)}
    return out, attrs


def observation_spec(params: dict[str, Any]):
    """The :class:`~pipeline.data.observe.ObservationSpec` of the ``obs_*`` keys (default: temperature, every level)."""
    from .observe import ObservationSpec

    std = params["obs_std"]
    noise = dict(std) if isinstance(std, dict) else {v: std for v in params["obs_variables"]}
    station_seed = params["obs_station_seed"]
    return ObservationSpec(variables=tuple(params["obs_variables"]),
                           levels=None if params["obs_levels"] is None else tuple(params["obs_levels"]),
                           thinning=(params["obs_stride"], params["obs_stride"]), stations=params["obs_stations"],
                           noise_std=noise, seed=params["seed"],
                           station_seed=params["seed"] if station_seed is None else station_seed)


def build_truth(fields: dict[str, np.ndarray], params: dict[str, Any], extra: dict[str, Any]):
    import pandas as pd
    import xarray as xr

    n = next(iter(fields.values())).shape[0]
    lat = -87.1875 + 5.625 * np.arange(32)
    lon = 5.625 * np.arange(64)
    coords = {
        "time": ("time", pd.date_range(START, periods=n, freq=f"{CYCLE_HOURS}h").values, {"long_name": "time"}),
        "level": ("level", np.asarray(params["levels"], dtype=np.int64),
                  {"units": "hPa", "long_name": "pressure_level", "standard_name": "air_pressure", "positive": "down"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"}),
    }
    data = {name: (("time", "level", "latitude", "longitude"), fields[name], dict(VARIABLES[name])) for name in VARIABLES}
    import dinosaur

    attrs = {
        "source": "diffda make-data sphere: Held-Suarez (1994) dry primitive equations, dinosaur dycore"
                  + (" (initial states); later states sampled from the neural emulator (truth=emulator)"
                     if params["truth"] == "emulator" else ""),
        "model": f"dinosaur {getattr(dinosaur, '__version__', '?')} PrimitiveEquations + HeldSuarezForcing, T21, "
                 f"{params['layers']} equidistant sigma levels, imex_rk_sil3 dt={params['dt_minutes']} min, "
                 "exponential spectral filter",
        "grid": "WeatherBench2 64x32 equiangular (spectral fields evaluated exactly at its nodes)",
        "calendar_note": "invented calendar: Held-Suarez has no seasons or diurnal cycle; time 0 is the end of the spin-up",
        "weak_points": "flat surface, dry, no seasons, jets at ~30-36 deg rather than ~45 deg",
        "cycle_hours": CYCLE_HOURS,
        "preset": "sphere",
        **{k: v for k, v in params.items()},
        **extra,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _encoding(ds, chunk_time: int) -> dict:
    return {name: {"chunks": (min(chunk_time, ds.sizes["time"]), *ds[name].shape[1:])} for name in ds.data_vars}




def make_sphere(out_dir: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``out_dir/truth.zarr`` and ``out_dir/observations.zarr``; return the parameters used."""
    params = sphere_params(overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if params["truth"] == "emulator":
        from .sphere_emulator import simulate_emulator

        fields, extra = simulate_emulator(params)
    else:
        fields, extra = simulate(params)
    truth = build_truth(fields, params, extra)
    from .observe import build_observations, write_observations

    # cycle 0 is the initial state: observations for times 1 .. T, as the twins
    obs = build_observations(truth.isel(time=slice(1, None)), observation_spec(params))
    obs.attrs.update({"preset": "sphere", "source": truth.attrs["source"], "seed": params["seed"]})
    write_atomic(truth, out / "truth.zarr", _encoding(truth, params["chunk_time"]))
    write_observations(obs, out / "observations.zarr", time_chunk=params["chunk_time"])
    return params


def make_init_file(path: Path = INIT_FILE, seed: int = 0, layers: int = 8, dt_minutes: int = 60) -> Path:
    """Spin up ``SHIPPED_SPINUP`` days from rest and save the modal state (float32, ~100 kB)."""
    model = HeldSuarez(layers, dt_minutes)
    state = model.run_days(model.rest_state(seed), SHIPPED_SPINUP)
    arrays = model.state_to_arrays(state)
    write_file(path, lambda tmp: np.savez_compressed(tmp, **arrays, spinup_days=SHIPPED_SPINUP, seed=seed, layers=layers,
                                                      dt_minutes=dt_minutes))
    return path


def _main() -> None:
    ap = argparse.ArgumentParser(description="Remake the shipped spun-up Held-Suarez state (sphere_init.npz).")
    ap.add_argument("--make-init", action="store_true", required=True)
    ap.add_argument("--out", type=Path, default=INIT_FILE)
    args = ap.parse_args()
    tic = time.perf_counter()
    make_init_file(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - tic:.1f} s")


if __name__ == "__main__":
    _main()

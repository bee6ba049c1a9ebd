r"""Distance-based localisation: the Gaspari–Cohn taper, state columns and their distances.

**Columns.** A state ``[*S]`` is ``F`` fields over ``P`` columns, the last axes flattened:
Lorenz-96 and the other twins ``S = (D,)`` have ``P = D`` columns of one value; a grid
``S = (C, H, W)`` has ``P = H W`` columns of ``C`` channels (all levels of all variables at one
point: a "grid column"). The flat state index ``s`` lies in column ``s mod P``, so an observation's
column is ``H.index mod P``.

**Distances.** Twins: the index distance on the periodic ring, ``d(i, j) = min(|i - j|, D - |i - j|)``
(DAPPER's ``nd_Id_localization((D,), periodic=True)``). Grids: great-circle kilometres,
``d = 2 R asin(sqrt(sin^2(dphi/2) + cos phi_1 cos phi_2 sin^2(dlambda/2)))``, ``R = 6371 km``.

**Taper** (Gaspari & Cohn 1999, eq. 4.10), with ``r = d / c``:

    1 - 5/3 r^2 + 5/8 r^3 + 1/2 r^4 - 1/4 r^5                          0 <= r <= 1
    4 - 5 r + 5/3 r^2 + 5/8 r^3 - 1/2 r^4 + 1/12 r^5 - 2/(3 r)          1 <  r <= 2
    0                                                                    r > 2

**Convention.** ``filter.localization_radius`` is the Gaspari–Cohn half-width ``c`` itself: the taper
is 5/24 at ``d = c`` and zero from ``d = 2 c`` (the support). DAPPER's ``loc_rad`` is a different
length: its ``dist2coeff`` uses ``c = 1.82 loc_rad`` (about ``sqrt(10/3)``, the factor that matches
the taper's curvature at 0 to a Gaussian of standard deviation ``loc_rad``; its docstring says the
taper is ``exp(-1/2) = 0.607`` at ``d = loc_rad``, the GC value there is 0.634), support
``3.64 loc_rad``. DAPPER's ``loc_rad = 4`` on Lorenz-96 is ``localization_radius = 7.28`` here.
``None`` is an infinite radius: every observation with taper 1 (the global ETKF / PF).

**Radius from the network** (``localization_radius: auto``). The mean observation spacing is
``d = (A / n)^(1/dim)``, ``n`` the observed columns, ``A`` the domain's extent: the ring's length ``D``
(``dim = 1``), or the grid's area on the sphere (``dim = 2``; ``4 pi R^2`` for a global grid), so that
a network twice as sparse in each direction gets twice the radius ``c = spacings * d``
(:func:`observation_spacing`, :func:`resolve_radius`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

EARTH_RADIUS_KM = 6371.0
DAPPER_GC_FACTOR = 1.82  # DAPPER's dist2coeff: c = 1.82 * loc_rad


def gaspari_cohn(r: Tensor) -> Tensor:
    """The Gaspari–Cohn taper of ``r = d / c`` (any shape, float64), 1 at 0, 0 from ``r = 2``."""
    r = r.double().abs()
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + 1 / 2 * r**4 - 1 / 4 * r**5
    rs = torch.where(r > 0, r, torch.ones_like(r))  # no division by zero in the unused branch
    outer = 4 - 5 * rs + 5 / 3 * rs**2 + 5 / 8 * rs**3 - 1 / 2 * rs**4 + 1 / 12 * rs**5 - 2 / (3 * rs)
    return torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r))).clamp(min=0.0)


def ring_distances(d: int) -> Tensor:
    """Index distance on a periodic ring of ``d`` points: ``[d, d]`` float64."""
    i = torch.arange(d, dtype=torch.float64)
    a = (i[:, None] - i[None, :]).abs()
    return torch.minimum(a, d - a)


def great_circle_km(latitude, longitude) -> Tensor:
    """Great-circle distances between the points of a ``latitude x longitude`` grid (degrees, row-major
    ``p = i W + j``): ``[H W, H W]`` float64 km (haversine)."""
    lat = torch.deg2rad(torch.as_tensor(latitude, dtype=torch.float64))
    lon = torch.deg2rad(torch.as_tensor(longitude, dtype=torch.float64))
    phi = lat[:, None].expand(len(lat), len(lon)).reshape(-1)
    lam = lon[None, :].expand(len(lat), len(lon)).reshape(-1)
    h = (torch.sin((phi[:, None] - phi[None, :]) / 2) ** 2
         + torch.cos(phi[:, None]) * torch.cos(phi[None, :]) * torch.sin((lam[:, None] - lam[None, :]) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(h.clamp(0.0, 1.0)))


@dataclass(frozen=True)
class Geometry:
    """``P`` columns and their distances ``[P, P]`` (index units on a ring, km on a grid). ``cache``
    keeps the tapers derived from the distances (:func:`local_observations`, :func:`smoothing_matrix`)
    across cycles: the observation network is usually the same every cycle."""

    distances: Tensor
    units: str = "index"
    extent: float = 0.0  # the domain's length (ring, dim 1) or area (sphere, km^2, dim 2)
    dim: int = 1
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def cached(self, key: tuple, make):
        """``make()``, computed once per ``key`` (the last few keys are kept)."""
        if key not in self.cache:
            if len(self.cache) >= 8:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = make()
        return self.cache[key]

    @property
    def n_columns(self) -> int:
        return int(self.distances.shape[0])

    def columns_of(self, flat_index: Tensor) -> Tensor:
        """The column of each flat state index: ``index mod P``."""
        return flat_index.cpu() % self.n_columns


def ring(d: int) -> Geometry:
    return Geometry(ring_distances(d), "index", extent=float(d), dim=1)


def sphere(latitude, longitude) -> Geometry:
    return Geometry(great_circle_km(latitude, longitude), "km", extent=grid_area_km2(latitude, longitude), dim=2)


def grid_area_km2(latitude, longitude) -> float:
    """Area of an equiangular ``latitude x longitude`` grid's cells (degrees, ascending), km^2:
    ``R^2 L sum_i (sin phi_i+ - sin phi_i-)`` with cell edges half-way between points (clipped to the
    poles) and ``L`` the longitudes' span (``2 pi`` when they go round); ``4 pi R^2`` for a global grid."""
    lat = torch.as_tensor(latitude, dtype=torch.float64).sort().values
    lon = torch.as_tensor(longitude, dtype=torch.float64)
    if len(lat) < 2 or len(lon) < 2:
        raise ValueError("grid_area_km2 needs at least two latitudes and two longitudes")
    mid = (lat[1:] + lat[:-1]) / 2
    edges = torch.cat([lat[:1] - (lat[1] - lat[0]) / 2, mid, lat[-1:] + (lat[-1] - lat[-2]) / 2]).clamp(-90.0, 90.0)
    dlon = float((lon[1] - lon[0]).abs())
    span = min(360.0, dlon * len(lon))
    band = torch.sin(torch.deg2rad(edges[1:])) - torch.sin(torch.deg2rad(edges[:-1]))
    return float(EARTH_RADIUS_KM**2 * math.radians(span) * band.sum())


def observation_spacing(geometry: Geometry, obs_columns: Tensor) -> float:
    """Mean spacing of the observed columns, ``d = (extent / n)^(1/dim)`` (``n`` distinct columns;
    index units on a ring, km on a grid)."""
    n = int(torch.unique(obs_columns.cpu()).numel())
    if n == 0:
        raise ValueError("no observed column to take the observation spacing from")
    return (geometry.extent / n) ** (1.0 / geometry.dim)


def resolve_radius(radius: float | str | None, spacings: float, geometry: Geometry, obs_columns: Tensor) -> float | None:
    """``radius`` itself, or for ``"auto"`` ``spacings * observation_spacing(geometry, obs_columns)``."""
    if radius != "auto":
        return radius
    return spacings * observation_spacing(geometry, obs_columns)


def geometry_of(problem) -> Geometry:
    """The twins' ring (``S = (D,)``) or the grid's columns (``S = (C, H, W)``, ``problem.layout``)."""
    shape = tuple(problem.state_shape)
    if len(shape) == 1:
        return ring(shape[0])
    layout = problem.layout
    return sphere(layout.latitude, layout.longitude)


@dataclass(frozen=True)
class LocalObs:
    """For each of ``P`` columns the ``L`` nearest-enough observations: ``index`` ``[P, L]`` (into the
    ``M`` observations; padding points at observation 0) and their taper ``coef`` ``[P, L]`` (0 in the
    padding). ``L`` is the most observations any column sees."""

    index: Tensor
    coef: Tensor


def local_observations(geometry: Geometry, obs_columns: Tensor, radius: float | None,
                       columns: Tensor | None = None) -> LocalObs:
    """Tapered observations near each column of ``columns`` (default all): ``GC(d(p, o) / radius)``,
    or all ``M`` observations with taper 1 when ``radius`` is None."""
    key = ("local", radius, obs_columns.cpu().numpy().tobytes(), None if columns is None else columns.cpu().numpy().tobytes())
    return geometry.cached(key, lambda: _local_observations(geometry, obs_columns, radius, columns))


def _local_observations(geometry: Geometry, obs_columns: Tensor, radius: float | None,
                        columns: Tensor | None) -> LocalObs:
    cols = torch.arange(geometry.n_columns) if columns is None else columns.cpu()
    m = int(obs_columns.numel())
    if radius is None:
        return LocalObs(torch.arange(m).expand(len(cols), m).clone(), torch.ones(len(cols), m, dtype=torch.float64))
    coef = gaspari_cohn(geometry.distances[cols][:, obs_columns.cpu()] / radius)  # [P, M]
    near = coef > 0
    width = int(near.sum(1).max()) if len(cols) and m else 0
    order = torch.argsort((~near).to(torch.int8), dim=1, stable=True)[:, :width]  # the near ones first
    idx = order
    c = torch.gather(coef, 1, idx)
    idx = torch.where(c > 0, idx, torch.zeros_like(idx))
    return LocalObs(idx, c)


def smoothing_matrix(geometry: Geometry, half_width: float | None) -> Tensor | None:
    """Row-normalised ``GC(d(p, q) / half_width)`` ``[P, P]`` (None when ``half_width`` is None)."""
    if half_width is None:
        return None

    def make() -> Tensor:
        s = gaspari_cohn(geometry.distances / half_width)
        return s / s.sum(1, keepdim=True)

    return geometry.cached(("smooth", half_width), make)


def dapper_radius(loc_rad: float) -> float:
    """``localization_radius`` giving DAPPER's taper for its ``loc_rad``: ``1.82 loc_rad``."""
    return DAPPER_GC_FACTOR * loc_rad


__all__ = ["gaspari_cohn", "ring_distances", "great_circle_km", "Geometry", "ring", "sphere", "geometry_of",
           "LocalObs", "local_observations", "smoothing_matrix", "dapper_radius", "grid_area_km2",
           "observation_spacing", "resolve_radius"]

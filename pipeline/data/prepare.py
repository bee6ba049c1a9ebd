r"""``diffda prepare``: statistics, regridding and observation building, on a Dask cluster.

One pass, lazily planned and then computed by Dask:

1. open the reference (path or fsspec URL) and select variables, levels and the time range
   (:func:`pipeline.data.era5.select`);
2. optionally regrid it to a target grid (:func:`pipeline.data.era5.to_grid`) and write the
   result as ``OUT/truth.zarr`` (Zarr 3, one time step per chunk);
3. compute per-variable, per-level statistics (:func:`pipeline.data.era5.compute_statistics`)
   and store them as ``OUT/statistics.json``;
4. optionally build observations (:func:`pipeline.data.observe.build_observations`) and write
   ``OUT/observations.zarr``.

Where the computing happens: a Dask ``LocalCluster`` by default (threads, ``workers`` x
``threads``, listening on 127.0.0.1 only), or any cluster handed in; ``diffda prepare --profile
NAME`` hands in the dask-jobqueue ``SLURMCluster`` of a site profile
(:func:`jobs.profiles.slurm_cluster`), so this module knows nothing of SLURM.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .atomic import write_atomic
from .era5 import compute_statistics, open_store, select, to_grid


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def dask_client(cluster: Any = None, workers: int = 1, threads: int = 2,
                processes: bool = False) -> Iterator[Any]:
    """A ``distributed.Client`` on ``cluster`` (e.g. the dask-jobqueue ``SLURMCluster`` that
    :func:`jobs.profiles.slurm_cluster` builds from a site profile), or on a new ``LocalCluster``
    of ``workers`` x ``threads`` whose scheduler, workers and dashboards listen on loopback only.
    The cluster is closed on exit."""
    from distributed import Client, LocalCluster

    if cluster is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=processes,
                               protocol="tcp://", host=LOOPBACK, dashboard_address=f"{LOOPBACK}:0",
                               worker_dashboard_address=f"{LOOPBACK}:0")
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def parse_grid(text: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``NLONxNLAT`` (WeatherBench2 equiangular cell centres, latitude ascending, no poles),
    or ``None``."""
    if not text:
        return None
    try:
        nlon, nlat = (int(x) for x in str(text).lower().split("x"))
    except ValueError:
        raise InputError(f"--grid {text!r}: expected NLONxNLAT, e.g. 64x32") from None
    dlat, dlon = 180.0 / nlat, 360.0 / nlon
    return -90 + dlat / 2 + dlat * np.arange(nlat), dlon * np.arange(nlon)


def write_store(ds: xr.Dataset, path: str | Path, time_chunk: int = 1) -> Path:
    """Write a dataset as Zarr 3, ``time_chunk`` times by the whole grid per chunk, atomically."""
    ds = ds.chunk({"time": time_chunk, **{d: -1 for d in ds.dims if d != "time"}})
    for v in ds.variables:
        ds[v].encoding.clear()
    return write_atomic(ds, path)


def prepare(source: str | Path, out_dir: str | Path, *, variables: Sequence[str] | None = None,
            levels: Sequence[float] | None = None, start: Any = None, stop: Any = None,
            grid: tuple[np.ndarray, np.ndarray] | None = None, observe: Mapping[str, Any] | None = None,
            write_reference: bool | None = None, storage_options: Mapping[str, Any] | None = None,
            log=None) -> dict[str, Any]:
    """Statistics (always), regridded reference (with ``grid`` or ``write_reference``) and
    observations (with ``observe``, an :class:`ObservationSpec` mapping) into ``out_dir``."""
    from .observe import ObservationSpec, build_observations, write_observations

    log = log or (lambda s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    ref = select(open_store(source, storage_options, what="reference"), variables, levels, start, stop,
                 name=f"reference {source}")
    if grid is not None:
        ref = to_grid(ref, *grid)
    summary: dict[str, Any] = {"source": str(source), "times": int(ref.sizes["time"]),
                               "variables": list(map(str, ref.data_vars))}
    reference_path = out / "truth.zarr"
    if write_reference or (write_reference is None and grid is not None):
        if Path(str(source)).resolve() == reference_path.resolve():
            raise InputError(f"--out {out} would overwrite the reference {source}; choose another --out")
        write_store(ref, reference_path)
        ref = select(open_store(reference_path, what="reference"))
        summary["reference"] = str(reference_path)
        log(f"wrote {reference_path} ({time.perf_counter() - tic:.1f} s)")
    stats = compute_statistics(ref)
    stats.attrs["source"] = str(source)
    summary["statistics"] = str(stats.save(out / "statistics.json"))
    log(f"wrote {out / 'statistics.json'} ({time.perf_counter() - tic:.1f} s)")
    if observe is not None:
        spec = observe if isinstance(observe, ObservationSpec) else ObservationSpec.from_dict(observe)
        obs_path = out / "observations.zarr"
        write_observations(build_observations(ref.isel(time=slice(1, None)), spec), obs_path)
        summary["observations"] = str(obs_path)
        log(f"wrote {obs_path} ({time.perf_counter() - tic:.1f} s)")
    summary["seconds"] = round(time.perf_counter() - tic, 2)
    return summary

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
``threads``), or a dask-jobqueue ``SLURMCluster`` when given a site profile
(``slurm/profiles/NAME.yaml`` or a path): its keys are read leniently:

    partition -> queue          account -> account        qos -> --qos=...
    time -> walltime            cpus_per_task -> cores    mem -> memory
    setup (list of shell lines) -> job_script_prologue     gpus, constraint, reservation -> directives
    dask: {any SLURMCluster keyword, e.g. processes, interface, local_directory} (verbatim)

Unknown keys are ignored (the profile serves the SLURM engineer's sbatch templates too).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .era5 import compute_statistics, open_store, select, to_grid

PROFILE_DIRS = (Path("slurm/profiles"), Path(__file__).resolve().parents[2] / "slurm" / "profiles")


def find_profile(name: str | Path) -> Path:
    """``NAME`` -> ``slurm/profiles/NAME.yaml`` (cwd, then the repository), or a YAML path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    for d in PROFILE_DIRS:
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    have = sorted({f.stem for d in PROFILE_DIRS if d.is_dir() for f in d.glob("*.y*ml")})
    raise InputError(f"site profile {name!r} not found in slurm/profiles/ (have: {', '.join(have) or 'none'}); "
                     "give a profile name or a YAML path")


def slurm_cluster_kwargs(profile: Mapping[str, Any]) -> dict[str, Any]:
    """SLURMCluster keywords from a site profile (lenient: unknown keys ignored)."""
    p = dict(profile or {})
    kw: dict[str, Any] = {}
    if p.get("partition"):
        kw["queue"] = str(p["partition"])
    if p.get("account"):
        kw["account"] = str(p["account"])
    if p.get("time"):
        kw["walltime"] = str(p["time"])
    cores = p.get("cpus_per_task") or p.get("cores") or 1
    kw["cores"] = int(cores)
    mem = p.get("mem") or p.get("memory") or "4GB"
    mem = str(mem)
    if mem[-1:].upper() in ("G", "M", "K", "T"):  # SLURM's 16G -> dask's 16GB
        mem += "B"
    kw["memory"] = mem
    directives = []
    if p.get("qos"):
        directives.append(f"--qos={p['qos']}")
    for key in ("constraint", "reservation"):
        if p.get(key):
            directives.append(f"--{key}={p[key]}")
    if p.get("gpus"):
        directives.append(f"--gpus={p['gpus']}")
    for extra in p.get("sbatch", []) or p.get("extra", []) or []:
        directives.append(str(extra) if str(extra).startswith("--") else f"--{extra}")
    if directives:
        kw["job_extra_directives"] = directives
    setup = p.get("setup") or []
    if isinstance(setup, str):
        setup = [line for line in setup.splitlines() if line.strip()]
    if setup:
        kw["job_script_prologue"] = [str(s) for s in setup]
    kw.update(dict(p.get("dask") or {}))
    kw.setdefault("processes", 1)
    return kw


@contextlib.contextmanager
def dask_client(profile: str | Path | None = None, workers: int = 1, threads: int = 2,
                processes: bool = False, log=None) -> Iterator[Any]:
    """A ``distributed.Client`` on a LocalCluster (default) or a SLURMCluster (``profile``)."""
    from distributed import Client, LocalCluster

    if profile is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=processes,
                               dashboard_address=None)
    else:
        import yaml
        from dask_jobqueue import SLURMCluster

        path = find_profile(profile)
        kw = slurm_cluster_kwargs(yaml.safe_load(path.read_text()) or {})
        cluster = SLURMCluster(**kw)
        cluster.scale(jobs=workers)
        if log:
            log(f"SLURMCluster from {path}: {workers} job(s)\n{cluster.job_script()}")
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds = ds.chunk({"time": time_chunk, **{d: -1 for d in ds.dims if d != "time"}})
    for v in ds.variables:
        ds[v].encoding.clear()
    ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


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

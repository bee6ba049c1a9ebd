"""``diffda prepare --data DIR [--store URL] [--grid 64x32] [--observe] [--profile NAME]``.

Computes the per-variable, per-level normalisation statistics of a reference store once, with
Dask, and stores them as ``OUT/statistics.json``; optionally regrids the reference to
``OUT/truth.zarr`` and builds ``OUT/observations.zarr`` from it. Runs on a local Dask cluster,
or on a dask-jobqueue SLURMCluster with ``--profile NAME`` (``slurm/profiles/NAME.yaml``; that
option is added by :mod:`jobs.commands.prepare`, which hands :func:`run` the cluster).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import apply_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="statistics, regridding and observations of a reference store (Dask)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_prepare_arguments(p)
    p.set_defaults(func=main)


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="input directory holding truth.zarr (and the default --out)")
    p.add_argument("--store", help="reference store path or fsspec URL (default DATA/truth.zarr)")
    p.add_argument("--out", type=Path, help="output directory (default --data)")
    p.add_argument("--variables", help="comma-separated ERA5 long names (default: all)")
    p.add_argument("--levels", help="comma-separated pressure levels in hPa (default: all)")
    p.add_argument("--start", help="first time (ISO 8601)")
    p.add_argument("--stop", help="last time (ISO 8601)")
    p.add_argument("--grid", help="regrid to NLONxNLAT (e.g. 64x32) and write OUT/truth.zarr")
    p.add_argument("--observe", action="store_true", help="build OUT/observations.zarr from the reference")
    p.add_argument("--obs", dest="obs", action="append", default=[], metavar="KEY=VALUE",
                   help="observation spec key, e.g. --obs thinning=4 --obs noise_std.temperature=0.5")
    p.add_argument("--workers", type=int, default=1, help="Dask workers (SLURM jobs with --profile)")
    p.add_argument("--threads", type=int, default=2, help="threads per local worker")


def main(args: argparse.Namespace) -> int:
    return run(args)


def run(args: argparse.Namespace, cluster_for=None) -> int:
    """``diffda prepare`` on ``cluster_for(out)`` (any Dask cluster, made once the arguments are
    checked; None: a local one)."""
    from ..data.prepare import dask_client, parse_grid, prepare
    from ..errors import InputError

    if args.data is None and args.store is None:
        raise InputError("give --data DIR (with truth.zarr) or --store PATH_OR_URL")
    source = args.store or str(args.data / "truth.zarr")
    out = args.out or args.data
    if out is None:
        raise InputError("give --out DIR (where statistics.json goes) when reading --store without --data")
    observe = apply_overrides({}, args.obs) if (args.observe or args.obs) else None
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    cluster = None if cluster_for is None else cluster_for(Path(out))
    with dask_client(cluster, workers=args.workers, threads=args.threads) as client:
        log(f"dask: scheduler at {client.scheduler.address}")
        summary = prepare(
            source, out,
            variables=args.variables.split(",") if args.variables else None,
            levels=[float(x) for x in args.levels.split(",")] if args.levels else None,
            start=args.start, stop=args.stop, grid=parse_grid(args.grid), observe=observe, log=log)
    print(json.dumps(summary, indent=1))
    return 0

"""``diffda prepare ... --profile NAME``: the Dask data plane on a SLURM cluster (dask-jobqueue).

The same command as :mod:`pipeline.commands.prepare`, plus ``--profile``: with it, the work runs
on the site profile's ``SLURMCluster`` (:func:`jobs.profiles.slurm_cluster`, ``--workers`` jobs,
their logs in ``OUT/slurm``); without it, on a local Dask cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands import prepare as local


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="statistics, regridding and observations of a reference store (Dask)",
                       description=local.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    local.add_prepare_arguments(p)
    p.add_argument("--profile", help="run on a SLURMCluster from slurm/profiles/NAME.yaml (default: LocalCluster)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.profile:
        return local.run(args)
    from ..profiles import load_profile, slurm_cluster

    profile = load_profile(args.profile)

    def cluster_for(out: Path):
        cluster = slurm_cluster(profile, workers=args.workers, log_directory=out / "slurm")
        print(f"SLURMCluster from profile {args.profile}: {args.workers} job(s), logs in {out / 'slurm'}\n"
              f"{cluster.job_script()}", file=sys.stderr, flush=True)
        return cluster

    return local.run(args, cluster_for=cluster_for)

"""``diffda prepare ... --profile NAME``: the Dask data plane on a SLURM cluster (dask-jobqueue).

The same command as :mod:`pipeline.commands.prepare`, plus ``--profile``: with it, the work runs
on the site profile's ``SLURMCluster`` (:func:`jobs.profiles.slurm_cluster`, ``--workers`` jobs,
their logs in ``OUT/slurm``); without it, on a local Dask cluster.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import prepare as local


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="statistics, regridding and observations of a reference store (Dask)",
                       description=local.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    local.add_prepare_arguments(p)
    p.add_argument("--profile", help="run on a SLURMCluster from slurm/profiles/NAME.yaml (default: LocalCluster)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cluster = None
    if args.profile:
        from ..profiles import load_profile, slurm_cluster

        out = args.out or args.data
        logs = None if out is None else out / "slurm"
        cluster = slurm_cluster(load_profile(args.profile), workers=args.workers, log_directory=logs)
        print(f"SLURMCluster from profile {args.profile}: {args.workers} job(s), logs in {logs}\n"
              f"{cluster.job_script()}", file=sys.stderr, flush=True)
    return local.run(args, cluster=cluster)

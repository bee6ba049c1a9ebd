"""``diffda run-window CAMPAIGN_DIR [INDEX]``: run one window of a campaign's manifest.

What an array task of ``slurm/campaign-window.sbatch`` runs (INDEX defaults to
``$SLURM_ARRAY_TASK_ID``): the window's job (an assimilation or a smoothing window, the manifest's
``kind``) and config come from :func:`jobs.campaign.window_job`, the same mapping the submitit jobs
use. Exit status as ``diffda run`` / ``diffda smooth`` (75 after USR2: requeue).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.errors import DiffdaError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-window", help="run one window of a campaign (what an sbatch array task runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="campaign directory (campaign.json)")
    p.add_argument("index", nargs="?", type=int, help="window index (default $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--quiet", action="store_true", help="no per-cycle progress (a run) or summary (a smoothing window)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.stop import StopFlag

    from ..campaign import load_manifest, window_job

    index = args.index
    if index is None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is None:
            raise DiffdaError("give the window INDEX (or run as an array task: SLURM_ARRAY_TASK_ID)")
        index = int(task)
    manifest = load_manifest(args.dir)
    if not 0 <= index < len(manifest["windows"]):
        raise DiffdaError(f"{args.dir} has windows 0..{len(manifest['windows']) - 1}, not {index}")
    job = window_job(manifest, manifest["windows"][index])
    job.quiet = args.quiet
    cfg, data_dir, out_dir = job.resolve()
    with StopFlag() as stop:
        rc, _ = job.execute(cfg, data_dir, out_dir, stop)
    return rc

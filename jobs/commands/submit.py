"""``diffda submit [CONFIG] --profile NAME [--data DIR] [--out DIR] [--set key=value ...] [--wait]``.

Validates the config (as ``diffda run``) and the profile (``slurm/profiles/NAME.yaml``), checks
the job against them (GPUs per node vs tasks, particles vs ranks, time limit vs estimated run
time, paths the compute nodes must see, options SLURM would reject), then submits the
assimilation through submitit: one task per GPU, the profile's srun arguments and set-up lines,
USR2 before the time limit (checkpoint and requeue). Prints the job id, the log paths and how to
follow it; ``--wait`` blocks until the job ends and exits with its status (0 when it completed).
The job pickles and logs go to OUT/slurm/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.commands.run import add_run_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit an assimilation to SLURM (or run it locally) with a site profile",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    add_submit_arguments(p)
    p.set_defaults(func=main)


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="site profile: slurm/profiles/NAME.yaml, or a path")
    p.add_argument("--wait", action="store_true", help="block until the job ends; exit with its status")
    p.add_argument("--cycle-seconds", type=float, help="seconds per cycle for the time-limit check (default: estimated)")
    p.add_argument("--dry-run", action="store_true", help="check and print the plan, submit nothing")


def main(args: argparse.Namespace) -> int:
    from ..assimilate import Assimilate
    from ..profiles import load_profile
    from ..submission import check, make_executor, resolve_run

    spec = resolve_run(args.config, args.overrides, args.data, args.out, args.preset)
    profile = load_profile(args.profile)
    warnings = check(profile, spec, args.cycle_seconds)
    for w in warnings:
        print(f"diffda submit: warning: {w}", file=sys.stderr)
    plan = (f"{spec.cfg.data.preset}: {spec.cfg.filter.method} N={spec.cfg.filter.particles}, "
            f"{spec.cycles if spec.cycles is not None else '?'} cycles on {profile.ranks} rank(s) "
            f"({profile.nodes} node(s) x {profile.tasks_per_node}, {profile.gpus_per_node} GPU(s)/node), "
            f"profile {profile.name} ({profile.executor}), time {profile.time}")
    if spec.run_seconds is not None:
        plan += f", estimated {spec.run_seconds / 60:.1f} min ({spec.estimate_source})"
    print(plan)
    if args.dry_run:
        return 0
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    folder = spec.out_dir / "slurm"
    ex = make_executor(profile, folder, job_name=f"diffda-{spec.out_dir.name}")
    job = ex.submit(Assimilate(spec.config, spec.overrides, spec.data_dir, spec.out_dir, fresh=args.fresh,
                               preset=None, quiet=args.quiet))
    record = {"job_id": str(job.job_id), "profile": profile.name, "executor": profile.executor,
              "folder": str(folder), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
              "submitted_at": time.time(), "out": str(spec.out_dir), "data": str(spec.data_dir)}
    (spec.out_dir / "submission.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"submitted job {job.job_id} ({profile.executor}, profile {profile.name})")
    print(f"  output   {spec.out_dir}")
    print(f"  stdout   {job.paths.stdout}")
    print(f"  stderr   {job.paths.stderr}   (task 0; other tasks: {folder}/{job.job_id}_<task>_log.err)")
    if profile.executor == "slurm":
        print(f"  follow   tail -f {job.paths.stderr}   |   squeue -j {job.job_id}   |   scancel {job.job_id}")
    else:
        print(f"  follow   tail -f {job.paths.stderr}")
    if not args.wait:
        return 0
    return wait_for(job, profile.executor)


def wait_for(job, executor: str) -> int:
    """Block until ``job`` ends; 0 when it completed its run, 1 otherwise (with its log's tail)."""
    from .. import slurmctl

    if executor == "slurm":
        def show(infos):
            info = infos[str(job.job_id)]
            extra = f" ({info.reason})" if info.reason and info.reason != "None" else ""
            print(f"job {job.job_id}: {info.state}{extra}", file=sys.stderr, flush=True)

        infos = slurmctl.wait([str(job.job_id)], on_change=show)
        state = infos[str(job.job_id)].state
    else:
        job.wait()
        state = job.state
    from ..submission import read_result

    outcome = read_result(Path(job.paths.result_pickle))
    ok = outcome is not None and outcome[0] == "success"
    message = ""
    if outcome is not None and not ok:
        lines = [ln for ln in str(outcome[1]).strip().splitlines() if ln.strip()]
        message = lines[-1].strip() if lines else "error"
    if ok:
        print(f"job {job.job_id} completed")
        summary = "\n".join(ln for ln in _tail(Path(job.paths.stdout), 60).splitlines() if not ln.startswith("submitit "))
        if summary:
            print(summary)
        return 0
    print(f"job {job.job_id} failed ({state}){': ' + message if message else ''}; log: {job.paths.stderr}",
          file=sys.stderr)
    tail = _tail(Path(job.paths.stderr))
    if tail:
        print(tail, file=sys.stderr)
    return 1


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

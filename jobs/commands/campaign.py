"""``diffda campaign [CONFIG] [--kind run|smooth] --profile NAME --start DATE --end DATE --window LENGTH --out DIR``.

Splits ``[start, end)`` into windows of ``LENGTH`` (``5D``, ``36h``, ...) on the data's time axis
and submits one job per window: with ``--kind run`` (default) an assimilation (``diffda run``),
with ``--kind smooth`` a smoothing window (``diffda smooth``; a window already complete is skipped
by its job, so each is written once). ``--mode independent`` (default, and the only mode of
smoothing windows) submits a job array with at most ``--max-concurrent`` tasks at a time, each
assimilation window starting ``--spinup`` earlier from a fresh ensemble; ``--mode chained`` a chain
of dependent assimilations, each window starting from the previous
window's final particles. Every window is checked before anything is submitted. The campaign
directory (``--out``) keeps the manifest ``campaign.json``, the windows' runs ``wNNN/`` and the
logs ``slurm/``. ``diffda status DIR`` shows progress; ``diffda campaign --resume DIR`` resubmits
only the windows that are not done (failed, or never submitted) and not queued.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="submit a period as windows (a job array or a chain)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", type=Path, help="YAML config (optional)")
    p.add_argument("--kind", choices=("run", "smooth"), default="run",
                   help="each window's job: an assimilation (run) or a smoothing window (smooth)")
    p.add_argument("--profile", help="site profile: slurm/profiles/NAME.yaml, or a path")
    p.add_argument("--start", help="first date of the period, e.g. 2020-01-01")
    p.add_argument("--end", help="end of the period (exclusive)")
    p.add_argument("--window", help="window length, e.g. 5D or 36h")
    p.add_argument("--mode", choices=("independent", "chained"), default="independent")
    p.add_argument("--spinup", help="independent windows: start this much earlier (left out of the metrics)")
    p.add_argument("--max-concurrent", type=int, default=8, help="array tasks running at once (independent)")
    p.add_argument("--preset", help="data preset (sets data.preset)")
    p.add_argument("--data", type=Path, help="input directory (truth.zarr, observations.zarr)")
    p.add_argument("--out", type=Path, help="campaign directory (default runs/campaign-<preset>, "
                   "runs/smooth-campaign-<preset> with --kind smooth)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cycle-seconds", type=float, help="seconds per cycle for the time-limit check")
    p.add_argument("--resume", type=Path, metavar="DIR", help="resubmit what is not done in campaign DIR")
    p.add_argument("--wait", action="store_true", help="block until every window has ended; exit 0 when all are done")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import campaign
    from pipeline.errors import DiffdaError

    if args.resume is not None:
        root = args.resume.resolve()
        indices, ids = campaign.resume(root)
        if not indices:
            print(f"nothing to resubmit in {root}")
        else:
            names = ", ".join(f"w{i:03d}" for i in indices)
            print(f"resubmitted {len(indices)} window(s) ({names}) as job(s) {', '.join(ids)}")
    else:
        missing = [o for o in ("profile", "start", "end", "window") if getattr(args, o) is None]
        if missing:
            raise DiffdaError("campaign needs " + ", ".join(f"--{m}" for m in missing) + " (or --resume DIR)")
        preset = args.preset
        default = f"smooth-campaign-{preset or 'linear'}" if args.kind == "smooth" else \
            f"campaign-{preset or 'lorenz96'}"
        root = (args.out or Path("runs") / default).resolve()
        manifest, warnings = campaign.create(
            args.config, args.overrides, args.data, root, args.profile, args.start, args.end, args.window,
            args.mode, args.spinup, args.max_concurrent, preset, args.cycle_seconds, args.kind)
        for w in warnings:
            print(f"diffda campaign: warning: {w}", file=sys.stderr)
        ids = campaign.submit(root, manifest, list(range(len(manifest["windows"]))))
        ws = manifest["windows"]
        what = "smoothing" if args.kind == "smooth" else args.mode
        print(f"campaign {root}: {len(ws)} {what} window(s) of {args.window} "
              f"({ws[0]['start']} .. {ws[-1]['end']}), job(s) {', '.join(sorted(set(i.split('_')[0] for i in ids)))}")
        for w in ws:
            spinup = "" if args.kind == "smooth" else f" (spin-up {w['spinup']})"
            print(f"  {w['name']}  {w['start']} .. {w['end']}  cycles {w['run_start'] + 1}..{w['run_start'] + w['cycles']}"
                  f"{spinup}  job {w['submissions'][-1]['job_id']}")
        print(f"  logs     {root / 'slurm'}")
        print(f"  follow   diffda status {root}")
    if not args.wait:
        return 0
    from .status import wait_campaign

    return wait_campaign(root)

"""``diffda bench NAME``: measured benchmarks, written to ``docs/benchmarks.md`` with the command."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..config import apply_overrides
from ..evaluate.report import write_section


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and record it in docs/benchmarks.md")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    f = bsub.add_parser("filters", help="PF (optimal proposal), bootstrap PF and ETKF on a twin")
    f.add_argument("--preset", default="lorenz96")
    f.add_argument("--particles", default="20,100", help="comma-separated ensemble sizes")
    f.add_argument("--data", type=Path, default=None)
    f.add_argument("--out", type=Path, default=Path("runs/bench-filters"))
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="common config override for every case, e.g. --set run.cycles=100")
    f.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    f.set_defaults(func=filters)
    sc = bsub.add_parser("scaling", help="the same run under mpiexec -n P for several P")
    sc.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    sc.add_argument("--data", type=Path, default=Path("data/lorenz96"))
    sc.add_argument("--out", type=Path, default=Path("runs/bench-scaling"))
    sc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sc.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    sc.set_defaults(func=scaling)


def _command() -> str:
    return "diffda " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def filters(args: argparse.Namespace) -> int:
    from ..evaluate.bench_filters import run_filters

    apply_overrides({}, args.overrides)  # syntax check before any work
    data = args.data or Path("data") / args.preset
    body, _ = run_filters(data, args.out, args.preset, [int(n) for n in args.particles.split(",")],
                          args.overrides, log=lambda s: print(s, file=sys.stderr, flush=True))
    write_section(args.report, f"filters-{args.preset}",
                  f"## Filters on the {args.preset} twin\n\n    {_command()}\n\n{body}")
    print(body)
    return 0


def scaling(args: argparse.Namespace) -> int:
    import os
    import platform

    from ..commands.run import ensure_data
    from ..config import load_config
    from ..evaluate.bench_scaling import run_scaling

    overrides = ["data.preset=lorenz96", "filter.particles=64", "run.cycles=50", *args.overrides]
    ensure_data(load_config(overrides=overrides), args.data)
    table, _ = run_scaling(args.data, args.out, [int(p) for p in args.ranks.split(",")], overrides)
    body = (f"## Scaling over MPI ranks (gloo, CPU)\n\n    {_command()}\n\n"
            f"Machine: {platform.machine()}, {os.cpu_count()} cores; one thread per rank; config: "
            f"{', '.join(overrides)}. Fractions are of rank 0's cycle time (comm includes waiting for "
            f"other ranks).\n\n{table}\n")
    write_section(args.report, "scaling", body)
    print(body)
    return 0

"""``diffda smooth [CONFIG.yaml] [--preset NAME] [--data DIR] [--out DIR] [--set key=value ...]``.

The trajectory posterior of one window (``run.start``, ``run.cycles``) given all its observations:
S samples from the score-based smoother (window denoiser over 2k+1 states, ``smoother:`` section),
written as ``DIR/analysis.zarr`` (the filter's layout), ``metrics.json`` and ``smooth.png``. Under
``mpiexec -n P`` the samples are sharded over the ranks; the result does not depend on P.
Example: ``diffda smooth pipeline/presets/linear-smooth.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .run import add_input_arguments, ensure_data, resolve_inputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smooth", help="smooth a window: the trajectory posterior given all its observations",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(p, "linear, lorenz63, lorenz96", "runs/smooth-<preset>", "smoother.window_half_width=3")
    p.set_defaults(func=main)


LINEAR_SMOOTH = Path(__file__).resolve().parents[1] / "presets" / "linear-smooth.yaml"


def main(args: argparse.Namespace) -> int:
    config = args.config
    if config is None and args.data is None and args.preset is None and not any(
            o.startswith("data.preset=") for o in args.overrides):
        config = LINEAR_SMOOTH
    cfg, data_dir, out_dir = resolve_inputs(config, args.overrides, args.data, args.out, args.preset)
    if args.out is None:
        out_dir = Path("runs") / f"smooth-{cfg.data.preset}"
    from ..distributed.failure import run_ranked

    return run_ranked(lambda ctx: body(ctx, cfg, data_dir, out_dir), device="cpu", backend=cfg.run.backend)


def body(ctx, cfg, data_dir: Path, out_dir: Path) -> int:
    from ..smoothers.window import smooth_window

    comm = ctx.comm
    if comm.rank == 0 and ensure_data(cfg, data_dir):
        print(f"made {cfg.data.preset} inputs in {data_dir}", file=sys.stderr)
    comm.barrier()
    metrics = smooth_window(cfg, data_dir, out_dir, comm)
    if comm.rank == 0:
        keys = ("rmse_analysis", "spread_analysis", "crps_analysis", "rmse_rts", "oracle_error",
                "oracle_spread_ratio", "wall_seconds", "denoiser_seconds")
        rows = [("data / window", f"{cfg.data.preset}, {metrics['window']} times, k={metrics['window_half_width']}, "
                 f"S={metrics['samples']}, {cfg.guidance.method}, C={cfg.sampler.corrections}")]
        rows += [(k, f"{metrics[k]:.4g}") for k in keys if k in metrics]
        rows.append(("analysis / metrics / plot", f"{out_dir / 'analysis.zarr'}, {out_dir / 'metrics.json'}, "
                     f"{out_dir / 'smooth.png'}"))
        width = max(len(r[0]) for r in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0

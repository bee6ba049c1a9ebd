"""``diffda smooth [CONFIG.yaml] [--preset NAME] [--data DIR] [--out DIR] [--set key=value ...] [--fresh] [--quiet]``.

The trajectory posterior of one window (``run.start``, ``run.cycles``) given all its observations:
S samples from the score-based smoother (window denoiser over 2k+1 states, ``smoother:`` section),
written as ``DIR/analysis.zarr`` (the filter's layout), ``metrics.json`` and ``smooth.png``. Under
``mpiexec -n P`` the samples are sharded over the ranks; the result does not depend on P. A window
already complete in DIR (its ``metrics.json``) is skipped; ``--fresh`` smooths it again.
Example: ``diffda smooth pipeline/presets/linear-smooth.yaml``. On gridded data (``--preset sphere``, ``era5``):
``--set model=neural --set model.checkpoint=CKPT`` of a ``diffda train --set kind=window-unet`` network, the
outputs in ``diffda run``'s gridded layout (:mod:`pipeline.smoothers.grid`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .run import add_input_arguments, ensure_data, locked
from .run import resolve_inputs as resolve_run_inputs

if TYPE_CHECKING:
    from ..smoothers.window import SmoothResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smooth", help="smooth a window: the trajectory posterior given all its observations",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_arguments(p, "linear, lorenz63, lorenz96, sphere (model=neural, a window-unet)", "runs/smooth-<preset>",
                        "smoother.window_half_width=3")
    p.add_argument("--fresh", action="store_true", help="smooth again a window already complete in --out")
    p.add_argument("--quiet", action="store_true", help="no summary table")
    p.set_defaults(func=main)


LINEAR_SMOOTH = Path(__file__).resolve().parents[1] / "presets" / "linear-smooth.yaml"


def resolve_inputs(config: Path | None, overrides: list[str], data: Path | None, out: Path | None,
                   preset: str | None = None):
    """:func:`.run.resolve_inputs` with the smoother's defaults: the linear-smooth preset when no
    input is named, ``runs/smooth-<preset>`` as the output."""
    if config is None and data is None and preset is None and not any(o.startswith("data.preset=") for o in overrides):
        config = LINEAR_SMOOTH
    cfg, data_dir, out_dir = resolve_run_inputs(config, overrides, data, out, preset)
    return cfg, data_dir, out_dir if out is not None else Path("runs") / f"smooth-{cfg.data.preset}"


def main(args: argparse.Namespace) -> int:
    cfg, data_dir, out_dir = resolve_inputs(args.config, args.overrides, args.data, args.out, args.preset)
    from ..stop import StopFlag

    with StopFlag() as stop:  # USR2/SIGTERM before sampling: exit 75/143 without writing; a rerun smooths
        rc, _ = execute(cfg, data_dir, out_dir, fresh=args.fresh, quiet=args.quiet, should_stop=stop)
    return rc


def execute(cfg, data_dir: Path, out_dir: Path, fresh: bool = False, quiet: bool = False,
            should_stop=None) -> tuple[int, "SmoothResult | None"]:
    """The one entry of a smoothing window (``diffda smooth``, the submitit job, ``diffda run-window``).

    (config, data directory, output directory, stop flag) -> (exit status, rank 0's
    ``SmoothResult`` or None when it failed). Under ``mpiexec``/``srun`` every rank calls it.
    """
    from ..distributed.failure import run_ranked

    box: list = []
    rc = run_ranked(lambda ctx: body(ctx, cfg, data_dir, out_dir, fresh, quiet, should_stop, box),
                    device="cpu", backend=cfg.run.backend)
    return rc, (box[0] if box else None)


def body(ctx, cfg, data_dir: Path, out_dir: Path, fresh: bool, quiet: bool, should_stop, result_box: list) -> int:
    """One rank's work, ``out_dir`` locked: make inputs (rank 0), smooth, print the summary (rank 0)."""
    from ..smoothers.window import smooth_window
    from ..stop import EXIT_STOPPED

    comm = ctx.comm
    with locked(comm, out_dir):
        if comm.rank == 0 and ensure_data(cfg, data_dir):
            print(f"made {cfg.data.preset} inputs in {data_dir}", file=sys.stderr)
        comm.barrier()
        result = smooth_window(cfg, data_dir, out_dir, comm, should_stop=should_stop, fresh=fresh)
    result_box.append(result)
    if result.stopped:
        if comm.rank == 0:
            why = getattr(should_stop, "signal", None) or "request"
            print(f"stopped before smoothing {out_dir} ({why}); the same command smooths it", file=sys.stderr,
                  flush=True)
        return getattr(should_stop, "exit_code", EXIT_STOPPED)
    if comm.rank == 0:
        if result.skipped:
            print(f"{out_dir} already holds this window (metrics.json); skipped", file=sys.stderr, flush=True)
        if not quiet:
            print_summary(cfg, result.metrics, out_dir)
    return 0


def print_summary(cfg, metrics: dict, out_dir: Path) -> None:
    keys = ("rmse_analysis", "spread_analysis", "crps_analysis", "rmse_rts", "oracle_error",
            "oracle_spread_ratio", "wall_seconds", "denoiser_seconds")
    rows = [("data / window", f"{cfg.data.preset}, {metrics['window']} times, k={metrics['window_half_width']}, "
             f"S={metrics['samples']}, {cfg.guidance.method}, C={cfg.sampler.corrections}")]
    rows += [(k, f"{metrics[k]:.4g}") for k in keys if k in metrics]
    rows.append(("analysis / metrics / plot", f"{out_dir / 'analysis.zarr'}, {out_dir / 'metrics.json'}, "
                 f"{out_dir / 'smooth.png'}"))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))

"""``diffda run [CONFIG.yaml] [--preset NAME] [--data DIR] [--set key=value ...] [--out DIR]``.

With no arguments: the embedded default (a Lorenz-96 twin), its data made first if absent, a
summary table at the end. Under ``mpiexec -n P`` or ``srun -n P`` the same command runs one
shard of the ensemble per rank.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, load_config

if TYPE_CHECKING:
    from ..run import RunResult


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="assimilate a window (the embedded default with no arguments)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(func=main)


def add_input_arguments(p: argparse.ArgumentParser, presets: str, out_default: str, example: str) -> None:
    """CONFIG, --preset, --data, --out and --set: the inputs every config-driven command takes."""
    p.add_argument("config", nargs="?", type=Path, help="YAML config (optional)")
    p.add_argument("--preset", help=f"data preset: {presets} (sets data.preset)")
    p.add_argument("--data", type=Path, help="input directory (truth.zarr, observations.zarr); made if absent")
    p.add_argument("--out", type=Path, help=f"output directory (default {out_default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"config override with a dotted key, e.g. --set {example}")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p, "linear, lorenz96, lorenz63, sphere", "runs/<preset>", "filter.particles=100")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out and start over")
    p.add_argument("--quiet", action="store_true", help="no per-cycle progress")


EMBEDDED_DEFAULT = Path(__file__).resolve().parents[1] / "presets" / "default.yaml"


def resolve(args: argparse.Namespace) -> tuple[Config, Path, Path]:
    """The CLI's arguments -> :func:`resolve_inputs`."""
    return resolve_inputs(args.config, args.overrides, args.data, args.out, args.preset)


def resolve_inputs(config: Path | None, overrides: list[str], data: Path | None, out: Path | None,
                   preset: str | None = None) -> tuple[Config, Path, Path]:
    """Validate the config and work out the data and output directories (no side effects)."""
    overrides = list(overrides)
    if preset:
        overrides.insert(0, f"data.preset={preset}")
    if config is None and data is None and not any(o.startswith("data.preset=") for o in overrides):
        config = EMBEDDED_DEFAULT  # `diffda run` alone: the sphere demo with the shipped emulator
    cfg = load_config(config, overrides)
    data_dir = data or cfg.data.dir or Path("data") / cfg.data.preset
    out_dir = out or Path("runs") / cfg.data.preset
    return cfg, Path(data_dir), Path(out_dir)


def ensure_data(cfg: Config, data_dir: Path) -> bool:
    """Make the inputs when absent; returns whether they were made."""
    if (data_dir / "truth.zarr").exists() and (data_dir / "observations.zarr").exists():
        return False
    if cfg.data.preset == "era5":  # existing stores (data.store / data.observations or DIR); nothing to make
        return False
    from .make_data import make_data

    make_data(cfg.data.preset, data_dir, dict(cfg.data.params))
    return True


def main(args: argparse.Namespace) -> int:
    cfg, data_dir, out_dir = resolve(args)
    from ..stop import StopFlag

    with StopFlag() as stop:  # USR2/SIGTERM: stop after the current cycle, exit 75/143; a rerun resumes
        rc, _ = execute(cfg, data_dir, out_dir, fresh=args.fresh, quiet=args.quiet, should_stop=stop)
    return rc


def execute(cfg: Config, data_dir: Path, out_dir: Path, fresh: bool = False, quiet: bool = False,
            should_stop=None) -> tuple[int, "RunResult | None"]:
    """The one entry of a run (``diffda run``, the submitit job, the sbatch templates).

    (config, data directory, output directory, stop flag) -> (exit status, rank 0's ``RunResult``
    or None when the run failed). Under ``mpiexec``/``srun``/``torchrun`` every rank calls it.
    """
    from ..distributed.failure import run_ranked

    box: list = []
    rc = run_ranked(lambda ctx: body(ctx, cfg, data_dir, out_dir, fresh=fresh, quiet=quiet,
                                     should_stop=should_stop, result_box=box),
                    device=cfg.run.device, backend=cfg.run.backend)
    return rc, (box[0] if box else None)


def body(ctx, cfg: Config, data_dir: Path, out_dir: Path, fresh: bool = False, quiet: bool = False,
         should_stop=None, result_box: list | None = None) -> int:
    """:func:`_work` with ``out_dir`` locked (:func:`locked`) for its duration."""
    with locked(ctx.comm, out_dir):
        return _work(ctx, cfg, data_dir, out_dir, fresh, quiet, should_stop, result_box)


@contextmanager
def locked(comm, out_dir: Path):
    """``out_dir`` locked by rank 0 (:mod:`pipeline.run_lock`) for the block; every rank raises when
    rank 0 could not lock it (another run holds it)."""
    from .. import run_lock
    from ..errors import CollectiveError, DiffdaError
    from ..run import _any_rank

    lock, refused = None, None
    if comm.rank == 0:
        try:
            lock = run_lock.acquire(out_dir)
        except DiffdaError as err:
            refused = err
    if _any_rank(comm, refused is not None):
        raise CollectiveError(str(refused) if refused else f"{out_dir} is locked by another run (see rank 0)")
    try:
        if lock is not None and lock.taken_over:
            print(f"warning: {lock.taken_over}", file=sys.stderr, flush=True)
        yield
    finally:
        if lock is not None:
            lock.release()


def _work(ctx, cfg: Config, data_dir: Path, out_dir: Path, fresh: bool = False, quiet: bool = False,
          should_stop=None, result_box: list | None = None) -> int:
    """One rank's work: make inputs (rank 0), assimilate, print the summary (rank 0).

    ``should_stop`` (see :mod:`pipeline.stop`) ends the run after a checkpointed cycle; the exit
    status is then 75 (after USR2: the batch script may requeue) or 143 (after SIGTERM).
    ``result_box``, when given, receives the ``RunResult``.
    """
    from ..stop import EXIT_STOPPED
    from ..run import assimilate

    comm = ctx.comm
    lead = comm.rank == 0
    if lead and ensure_data(cfg, data_dir):
        print(f"made {cfg.data.preset} inputs in {data_dir}", file=sys.stderr)
    comm.barrier()
    progress = None if quiet or not lead else make_progress()
    result = assimilate(cfg, data_dir, out_dir, comm, progress=progress, fresh=fresh, should_stop=should_stop,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    if result_box is not None:
        result_box.append(result)
    if result.stopped:
        if lead:
            if progress is not None:
                progress.close()
            why = getattr(should_stop, "signal", None) or "request"
            print(f"stopped after cycle {result.last_cycle} ({why}); checkpoint in {out_dir / 'checkpoint'}; "
                  f"the same command resumes", file=sys.stderr, flush=True)
        return getattr(should_stop, "exit_code", EXIT_STOPPED)
    if lead:
        if progress is not None:
            progress.close()
        print_summary(cfg, result.metrics, out_dir, result.resumed_from)
    return 0


class make_progress:
    """A tqdm bar at a terminal; a line per cycle in batch logs."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None

    def __call__(self, k: int, total: int, diag: dict) -> None:
        text = f"rmse={diag['rmse_analysis']:.3f} ess={diag['ess']:.1f}"
        if diag.get("alpha", 1.0) < 1.0:
            text += f" alpha={diag['alpha']:.3g}"
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=k - 1, unit="cycle", file=sys.stderr)
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        else:
            print(f"cycle {k}/{total} {text} resampled={int(diag['resampled'])} "
                  f"seconds={diag['cycle_seconds']:.2f}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_summary(cfg: Config, metrics: dict, out_dir: Path, resumed_from: int) -> None:
    rows = [
        ("data", cfg.data.preset), ("filter", f"{cfg.filter.method} (N={cfg.filter.particles})"),
        ("model / guidance", f"{cfg.model.kind} / {cfg.guidance.method}"),
    ]
    if resumed_from:
        rows.append(("resumed after cycle", str(resumed_from)))
    ra, rf = metrics.get("rmse_analysis"), metrics.get("rmse_free")
    if isinstance(ra, float) and isinstance(rf, float):
        rows.append(("analysis / free-run RMSE", f"{ra:.4g} / {rf:.4g} (ratio {ra / rf:.3g}: "
                     f"{'the observations help' if ra < rf else 'no better than no observations'})"))
    for key in ("rmse_analysis", "rmse_free", "rmse_forecast", "spread_analysis", "crps_analysis", "ess_mean", "ess_min",
                "alpha_mean", "resample_count", "wall_seconds", "denoiser_seconds", "denoiser_calls"):
        v = metrics.get(key)
        rows.append((key, f"{v:.4g}" if isinstance(v, float) else str(v)))
    if metrics.get("unscored"):  # non-finite truth: scores NaN, left out of the means above
        rows.append(("unscored cycles", ", ".join(map(str, metrics["unscored"]))))
    rows.append(("analysis", str(out_dir / "analysis.zarr")))
    plots = [out_dir / "cycles.png"] + ([out_dir / "maps.png"] if (out_dir / "maps.png").exists() else [])
    rows.append(("metrics / plot", f"{out_dir / 'metrics.json'}, {', '.join(map(str, plots))}"))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))

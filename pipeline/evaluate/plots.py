"""The run's PNG: RMSE (analysis, forecast and, with run.free_baseline, the free run), spread and ESS over cycles."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_cycles(path: str | Path, diagnostics: dict[str, np.ndarray], n_particles: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cycles = np.arange(1, len(diagnostics["ess"]) + 1)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, label in (("rmse_forecast", "RMSE forecast"), ("rmse_analysis", "RMSE analysis"), ("rmse_free", "RMSE free run"),
                       ("spread_analysis", "spread analysis")):
        if key in diagnostics and np.isfinite(diagnostics[key]).any():
            ax1.plot(cycles, diagnostics[key], label=label, lw=1)
    ax1.set_ylabel("error / spread")
    ax1.legend(loc="upper right")
    ax1.set_title(title)
    ax2.plot(cycles, diagnostics["ess"], lw=1, color="tab:green")
    ax2.axhline(n_particles, color="grey", lw=0.5, ls="--")
    ax2.set_ylabel("ESS")
    ax2.set_xlabel("cycle")
    alpha = diagnostics.get("alpha")
    if alpha is not None and np.isfinite(alpha).any() and np.nanmin(alpha) < 1.0:  # tempering was active
        ax3 = ax2.twinx()
        ax3.semilogy(cycles, alpha, lw=1, color="tab:purple", label="tempering alpha")
        ax3.set_ylabel("tempering alpha", color="tab:purple")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_runs(path: str | Path, runs: dict[str, dict[str, np.ndarray]], title: str) -> None:
    """RMSE (solid) and spread (dotted) of the analysis of several runs by cycle, and the free run's
    RMSE of the first run that has one (dashed, black). ``runs``: label -> that run's diagnostics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    free_done = False
    for i, (label, d) in enumerate(runs.items()):
        cycles = np.arange(1, len(d["rmse_analysis"]) + 1)
        color = f"C{i % 10}"
        ax.plot(cycles, d["rmse_analysis"], color=color, lw=1.2, label=f"{label}: RMSE")
        ax.plot(cycles, d["spread_analysis"], color=color, lw=1, ls=":", label=f"{label}: spread")
        free = d.get("rmse_free")
        if not free_done and free is not None and np.isfinite(free).any():
            ax.plot(cycles, free, color="k", lw=1, ls="--", label=f"free run ({label})")
            free_done = True
    ax.set_xlabel("cycle (6 h)")
    ax.set_ylabel("normalised RMSE / spread")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.evaluate.plots --out PNG [--title T] LABEL=RUN_DIR ...``: :func:`plot_runs`."""
    import argparse

    import xarray as xr

    p = argparse.ArgumentParser(prog="python -m pipeline.evaluate.plots", description=plot_runs.__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, _, run = item.partition("=")
        ds = xr.open_zarr(Path(run or label) / "analysis.zarr", consolidated=False)
        runs[label] = {k: ds[k].values for k in ("rmse_analysis", "spread_analysis", "rmse_free") if k in ds}
    plot_runs(args.out, runs, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

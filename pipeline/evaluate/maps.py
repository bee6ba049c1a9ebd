r"""``maps.png`` of a gridded run's last cycle: what the observations bought, where.

Rows: T850, Z500, U250 (those of them in the state). Columns: the analysis mean, the truth, the
analysis error ``mean - truth`` and the free-run error ``mean_free - truth`` (the same ensemble
propagated without observations, ``run.free_baseline``), the two error maps on one symmetric
colour scale per row so that they compare by eye. The observed grid points of the cycle (any
variable, any level) are marked with dots on every panel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PANELS = (("temperature", 850.0, "T850", "K"), ("geopotential", 500.0, "Z500", "m² s⁻²"),
          ("u_component_of_wind", 250.0, "U250", "m s⁻¹"))


def observed_points(index: np.ndarray, state_shape: tuple[int, ...]) -> np.ndarray:
    """``[H, W]`` True where any channel of ``[C, H, W]`` is observed (``index``: flat indices into it)."""
    mask = np.zeros(int(np.prod(state_shape)), dtype=bool)
    mask[np.asarray(index, dtype=np.int64)] = True
    return mask.reshape(state_shape).any(axis=0)


def plot_state_maps(path: str | Path, problem, mean, truth, free, observed: np.ndarray | None, title: str) -> list[str]:
    """:func:`plot_maps` of a gridded problem's normalised states ``[C, H, W]`` (tensors; ``free`` may be
    None), put into physical units by ``problem.fields``; ``observed`` ``[H, W]`` or None."""
    import torch

    zero = torch.zeros_like(mean)
    phys = lambda x: {k: v for k, v in problem.fields(x, zero, None).items() if not k.endswith("_spread")}  # noqa: E731
    layout = problem.layout
    return plot_maps(path, phys(mean), phys(truth), None if free is None else phys(free),
                     [float(lv) for lv in layout.levels], np.asarray(layout.latitude), np.asarray(layout.longitude),
                     observed, title)


def plot_maps(path: str | Path, analysis: dict[str, np.ndarray], truth: dict[str, np.ndarray],
              free: dict[str, np.ndarray] | None, levels: list[float], latitude: np.ndarray,
              longitude: np.ndarray, observed: np.ndarray | None, title: str) -> list[str]:
    """Write the PNG; fields are per variable ``[L, H, W]`` (physical). Returns the row labels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in PANELS if p[0] in analysis and p[1] in levels]
    if not rows:
        return []
    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 2.9 * len(rows)), squeeze=False)
    lon, lat = np.asarray(longitude), np.asarray(latitude)
    if observed is not None:
        oy, ox = np.nonzero(observed)
    for r, (var, level, label, unit) in enumerate(rows):
        j = levels.index(level)
        a, t = analysis[var][j], truth[var][j]
        f = free[var][j] if free is not None else np.full_like(a, np.nan)
        err_a, err_f = a - t, f - t
        lo, hi = np.nanmin([a.min(), t.min()]), np.nanmax([a.max(), t.max()])
        emax = float(np.nanmax(np.abs(np.concatenate([err_a.ravel(), err_f.ravel()])))) or 1.0
        panels = ((a, "analysis", "viridis", lo, hi), (t, "truth", "viridis", lo, hi),
                  (err_a, f"analysis error (RMSE {np.sqrt(np.mean(err_a**2)):.3g})", "RdBu_r", -emax, emax),
                  (err_f, "free-run error" + (f" (RMSE {np.sqrt(np.mean(err_f**2)):.3g})" if free is not None
                                              else " (run.free_baseline off)"), "RdBu_r", -emax, emax))
        for c, (field, name, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[r, c]
            im = ax.pcolormesh(lon, lat, field, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
            if observed is not None:
                ax.scatter(lon[ox], lat[oy], s=1.5, c="k", marker=".", linewidths=0)
            ax.set_title(f"{label} {name}", fontsize=9)
            ax.set_xticks([0, 90, 180, 270, 360])
            ax.set_yticks([-60, -30, 0, 30, 60])
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label=unit)
    fig.suptitle(title + ("; dots: observed points" if observed is not None else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [p[2] for p in rows]

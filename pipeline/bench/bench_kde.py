"""``diffda bench kde``: the closed-form KDE filter against etkf, pf-bootstrap and pf-optimal on
Lorenz-63 observed every 0.1 time units (10 RK4 steps of 0.01 per cycle, no model noise, noise std 2),
the KDE seed's setting (Binder & Oberai 2026): ``x3`` alone (identity), or all components through
``|x|``. Each row is a ``diffda run`` with the overrides shown.

Tuning, stated, the same for every filter: the best (lowest analysis RMSE) of a small sweep per N on
the same run, which is optimistic for all of them alike. The particle filters' jitter ``reg`` over
``REGS``; ETKF inflation over ``INFLATIONS``; the KDE filter's bandwidth factors
``filter.kde_bandwidth_x`` over ``KDE_BANDWIDTHS_X`` and ``filter.kde_bandwidth_y`` over
``KDE_BANDWIDTHS_Y``, at ``sampler.steps=32`` (64 steps changed the RMSE by less than the seed-to-seed
spread on a check of two cells; docs/benchmarks.md). Smaller ``h_x`` factors (0.1, 0.3) let the ensemble
collapse: with no model noise the kernel is the only spread the analysis gets, and it is a fixed
fraction of the forecast spread. The noise rows rerun the best KDE setting at ``NOISE_N`` with other
``run.seed`` values (the same truth and observations), the run-to-run spread that a difference must
exceed. With no model noise the optimal proposal is
the deterministic map itself (the Gaussian denoiser with ``q = 0`` returns ``m``; guidance has nothing
to move), so ``pf-optimal`` differs from ``pf-bootstrap`` only in weighing before propagating; it runs
8 sampler steps (the result does not depend on them here).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import load_config
from ..run import assimilate
from ..evaluate.report import markdown_table

SETTINGS = {
    "x3": ("x3 alone, identity", "data.params={steps: 10, components: [2], r: 4.0, q: 0.0, cycles: %d}"),
    "abs": ("all components through abs", "data.params={steps: 10, operator: abs, r: 4.0, q: 0.0, cycles: %d}"),
}
REGS = (1.0, 2.4)
INFLATIONS = (1.02, 1.1)
KDE_BANDWIDTHS_X = (1.0, 2.0)
KDE_BANDWIDTHS_Y = (1.0, 2.0)
NOISE_N, NOISE_SEEDS = 20, (1, 2)
METHODS: dict[str, list[list[str]]] = {
    "kde": [["filter.method=kde", "sampler.steps=32", f"filter.kde_bandwidth_x={bx}", f"filter.kde_bandwidth_y={by}"]
            for bx in KDE_BANDWIDTHS_X for by in KDE_BANDWIDTHS_Y],
    "etkf": [["filter.method=etkf", f"filter.inflation={i}"] for i in INFLATIONS],
    "pf-bootstrap": [["filter.method=pf-bootstrap", f"filter.regularization={r}"] for r in REGS],
    "pf-optimal": [["filter.method=pf-optimal", "guidance=mmps", "filter.weights=inflated", "sampler.steps=8",
                    f"filter.regularization={r}"] for r in REGS],
}


def base_overrides(key: str, cycles: int, common: list[str]) -> list[str]:
    """The twin of setting ``key``, the spin-up and ``common``, shared by every row (one final write)."""
    return ["data.preset=lorenz63", SETTINGS[key][1] % cycles, f"filter.spinup={max(10, cycles // 10)}",
            "run.checkpoint_every=100000", *common]


def _row(title: str, n: int, method: str, extra: list[str], m: dict) -> list[str]:
    return [title, str(n), method, " ".join(extra[1:]) or "-", f"{m['rmse_analysis']:.3f}",
            f"{m['spread_analysis']:.3f}", f"{m['ess_mean']:.1f}", f"{1e3 * m['wall_seconds'] / m['cycles']:.1f}"]


def run_kde(out_root: Path, particles: list[int], cycles: int, methods: list[str], settings: list[str],
            common: list[str], log: Callable[[str], None] = lambda s: None) -> tuple[str, dict]:
    """Every method's best of its sweep at every N and setting, then the noise rows; the markdown body and
    the metrics keyed ``(setting, method, N)`` (noise rows ``(setting, "kde", N, "run.seed=S")``)."""
    from ..commands.run import ensure_data

    spinup = max(10, cycles // 10)
    rows, noise_rows, results = [], [], {}
    for key in settings:
        title, _ = SETTINGS[key]
        base = base_overrides(key, cycles, common)
        data_dir = out_root / f"data-{key}-{cycles}"
        ensure_data(load_config(overrides=base), data_dir)

        def run(n: int, extra: list[str], name: str) -> dict:
            overrides = [*base, f"filter.particles={n}", *extra]
            m = assimilate(load_config(overrides=overrides), data_dir, out_root / f"{key}-{name}-n{n}", fresh=True).metrics
            log(f"{key} {name} N={n} {extra[1:]}: rmse_a {m['rmse_analysis']:.3f}")
            return m

        for n in particles:
            for method in methods:
                sweep = [(run(n, extra, method), extra) for extra in METHODS[method]]
                m, extra = min(sweep, key=lambda r: r[0]["rmse_analysis"])
                results[(key, method, n)] = {**m, "overrides": extra}
                rows.append(_row(title, n, method, extra, m))
        if "kde" in methods and NOISE_N in particles:
            best = results[(key, "kde", NOISE_N)]["overrides"]
            for seed in NOISE_SEEDS:
                extra = [*best, f"run.seed={seed}"]
                m = run(NOISE_N, extra, "kde-seed")
                results[(key, "kde", NOISE_N, extra[-1])] = {**m, "overrides": extra}
                noise_rows.append(_row(title, NOISE_N, "kde", extra, m))
    header = ["observed", "N", "filter", "setting (best of the sweep)", "RMSE a", "spread a", "ESS mean", "ms/cycle"]
    sweep = (f"kde: `filter.kde_bandwidth_x` in {list(KDE_BANDWIDTHS_X)} x `filter.kde_bandwidth_y` in "
             f"{list(KDE_BANDWIDTHS_Y)}, `sampler.steps=32`; etkf: `filter.inflation` in {list(INFLATIONS)}; "
             f"pf-bootstrap and pf-optimal: `filter.regularization` in {list(REGS)}")
    body = (f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), {torch.get_num_threads()} torch thread(s); "
            f"{cycles} cycles, metrics after {spinup}; Lorenz-63, 10 RK4 steps of 0.01 per cycle, noise std 2, no "
            f"model noise. Each run: `diffda run --set data.preset=lorenz63 --set '{SETTINGS[settings[0]][1] % cycles}' "
            f"--set filter.spinup={spinup} --set run.checkpoint_every=100000 --set filter.particles=N` plus the "
            f"filter's `filter.method` and the setting shown (pf-optimal: `guidance=mmps filter.weights=inflated "
            f"sampler.steps=8`). Each row is the lowest analysis RMSE of its filter's sweep, on the same run: "
            f"{sweep}.\n\n{markdown_table(header, rows)}\n")
    if noise_rows:
        body += (f"\nRun-to-run noise: the best KDE setting at N = {NOISE_N} again with other `run.seed` values "
                 f"(same truth and observations; the table's rows are `run.seed=0`).\n\n"
                 f"{markdown_table(header, noise_rows)}\n")
    return body, results

r"""``diffda bench smoother``: the smoother's error against the RTS oracle for k and C (the seed's convergence claim).

On the linear twin with its exact Gaussian window denoiser, for every guidance variant, half-width
``k`` and Langevin corrections ``C``: ``oracle_error`` (mean ``|m_S - m_RTS| / std_RTS``), the spread
ratio and RMSE / RMSE_RTS, from ``S`` samples of one window of ``L`` observation times.
Monte-Carlo floor of ``oracle_error``: ``sqrt(2/pi) rho / sqrt(S)`` (``rho`` the spread ratio).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

VARIANTS = {  # name -> config overrides
    "mmps-windows": ["guidance.method=mmps", "guidance.covariance=jacobian", "smoother.jacobian=windows"],
    "mmps-diagonal": ["guidance.method=mmps", "guidance.covariance=diagonal"],
    "sda": ["guidance.method=sda"],
}


def run_smoother_bench(data: Path, ks: list[int], cs: list[int], variants: list[str], samples: int, length: int,
                       overrides: list[str], log: Callable[[str], None] | None = None) -> tuple[str, list[dict]]:
    import torch

    from ..commands.run import ensure_data
    from ..config import load_config
    from ..problems import load_twin
    from ..data.twins import params_of
    from .smoother import smooth
    from .window import oracle, spec_of, window_denoiser

    base = ["data.preset=linear", "data.params={cycles: 40}", "run.start=10", f"run.cycles={length}",
            "guidance.cg_iterations=16", "sampler.steps=32", f"smoother.samples={samples}", *overrides]
    ensure_data(load_config(overrides=base), data)
    rows = []
    for variant in variants:
        for k in ks:
            for c in cs:
                cfg = load_config(overrides=[*base, *VARIANTS[variant], f"smoother.window_half_width={k}",
                                             f"sampler.corrections={c}"])
                p = load_twin(cfg, data, torch.device("cpu"), torch.float64)
                params = params_of(p.attrs)
                den = window_denoiser(cfg, "linear", params, p.state_shape[0])
                t0 = time.perf_counter()
                x, _ = smooth(den, p.obs_values, p.noise_variance, p.operator, spec_of(cfg), cfg.run.seed,
                              range(samples))
                seconds = time.perf_counter() - t0
                truth = p.truth_values[1:length + 1]
                o = oracle(params, p.obs_values, p.noise_variance, x, truth)
                rmse = float(((x.mean(0) - truth) ** 2).mean(-1).sqrt().mean())
                row = dict(variant=variant, k=k, C=c, error=o["oracle_error"], ratio=o["oracle_spread_ratio"],
                           rmse=rmse / o["rmse_rts"], seconds=seconds, floor=0.798 * o["oracle_spread_ratio"] / samples**0.5)
                rows.append(row)
                if log:
                    log(f"{variant} k={k} C={c}: error {row['error']:.3f} spread ratio {row['ratio']:.3f} "
                        f"RMSE/RTS {row['rmse']:.3f} ({seconds:.1f} s)")
    lines = [f"Linear twin (16 components, every other observed, r = 0.25), one window of L = {length} "
             f"observation times, exact Gaussian window denoiser over 2k+1 states, S = {samples} samples, "
             f"32 steps, CG 16. Error = mean |m_S - m_RTS| / std_RTS (Monte-Carlo floor "
             f"sqrt(2/pi) rho / sqrt(S) ~ {rows[0]['floor']:.3f}); ratio = sample spread / RTS std; "
             f"RMSE relative to RTS's. k = {(length - 1) // 2} would be full width.", "",
             "| guidance | k | C | error (std) | spread ratio | RMSE / RTS | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['k']} | {r['C']} | {r['error']:.3f} | {r['ratio']:.3f} | "
                     f"{r['rmse']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n", rows

"""Evaluation of finished runs as a job: metrics and the cycle plot recomputed from ``analysis.zarr``.

``Evaluate([OUT1, OUT2, ...])`` rewrites each run's ``metrics.json`` and ``cycles.png`` from its
analysis store (the configuration is read from the store's attributes) and returns the metrics,
by run. Idempotent: a requeued job simply does it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable


class Evaluate(Checkpointable):
    def __init__(self, runs: list[str | Path]):
        self.runs = [str(r) for r in runs]

    def __call__(self) -> dict[str, Any]:
        import xarray as xr

        from pipeline.config import Config
        from pipeline.evaluate.plots import plot_cycles
        from pipeline.run import DIAGNOSTICS, summarise

        out: dict[str, Any] = {}
        for run in map(Path, self.runs):
            store = run / "analysis.zarr"
            ds = xr.open_zarr(store)
            attrs = ds.attrs["config"]
            cfg = Config.model_validate(json.loads(attrs) if isinstance(attrs, str) else attrs)
            metrics = summarise(store, cfg)
            (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            plot_cycles(run / "cycles.png", {k: ds[k].values for k in DIAGNOSTICS}, cfg.filter.particles,
                        f"{cfg.data.preset}: {cfg.filter.method}, N={cfg.filter.particles}")
            out[str(run)] = metrics
        return out

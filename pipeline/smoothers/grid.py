r"""``diffda smooth`` on gridded data (``data.preset`` sphere or era5) with a trained window U-Net.

The window's states are the gridded filter's (:mod:`pipeline.data.gridded`): ``z = (x - mean_c) / std_c``
``[C, H, W]``, normalised by the checkpoint's per-channel statistics, channels ``(variable, level)`` in the
checkpoint's order, flattened to ``D = C H W`` for the composition (:mod:`.compose`; state ``i`` of the window
is ``z`` at observation time ``start + i``, ``i = 1..L``, the filter's cycle times with a history of one).
Observations are the gridded problem's, in the same units: ``y_z = (y - mean_c) / std_c`` with variance
``sigma_v² / std_c²``, NaN where (and when) a point, level or variable is not observed; the operator is the
identity on the observed entries. The window denoiser is :class:`.neural.NeuralWindowDenoiser` around the
``window-unet`` of ``model.checkpoint`` (``mu = 0``, ``s = 1``).

Outputs (rank 0), the layout ``diffda run`` writes on a grid, so its readers and plots apply:
``analysis.zarr`` with each variable's posterior mean under its own name over ``(time, level, latitude,
longitude)`` (physical units), ``<name>_spread``, ``<name>_members`` with ``run.members``, and per time
``rmse_analysis``, ``spread_analysis``, ``crps_analysis`` in normalised units (one number across variables,
as the filter's); ``metrics.json`` their means over the window; ``smooth.png`` the filter's maps
(:func:`pipeline.evaluate.maps.plot_maps`) at the window's centre time.

Refused before any sampling, the message naming the key: a model other than ``neural`` or no
``model.checkpoint``; a checkpoint of another kind (the filter's emulator, a twin's window network); a
window of another width (``smoother.window_half_width``); channels or a grid other than the data's; a window
shorter than ``2k+1`` (``run.cycles``); MMPS with the Jacobian covariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data.atomic import write_file, write_store
from ..diffusion.schedules import make_schedule
from ..models.network_checkpoint import GRID_WINDOW_KINDS, read_meta
from .neural import NeuralWindowDenoiser, check_width
from .window import DIAGNOSTICS, WindowInputs, check_length, check_network_guidance, scores, summary


def load_window(cfg: Config, data_dir: Path, out_dir: Path) -> WindowInputs:
    """The gridded window's inputs (the module docstring), every check done before the weights are read."""
    from ..data.gridded import load_gridded

    k, checkpoint = cfg.smoother.window_half_width, cfg.model.checkpoint
    if cfg.model.kind != "neural" or checkpoint is None:
        raise ConfigError(f"diffda smooth on gridded data (data.preset={cfg.data.preset}) needs model=neural with "
                          f"model.checkpoint=DIR of a window U-Net (`diffda train --data DIR --out CKPT --set "
                          f"kind=window-unet --set window_half_width={k}`); got model={cfg.model.kind}"
                          + ("" if checkpoint is None else f", model.checkpoint={checkpoint}"))
    check_network_guidance(cfg)
    check_width(read_meta(checkpoint, kind=GRID_WINDOW_KINDS), checkpoint, k)
    problem = load_gridded(cfg, data_dir, torch.device("cpu"), torch.float64, kind=GRID_WINDOW_KINDS[0])
    try:
        length = problem.n_cycles
        check_length(k, length)
        schedule = make_schedule(cfg.schedule.kind, **cfg.schedule.params)
        window = NeuralWindowDenoiser.from_checkpoint(checkpoint, schedule, k, problem.layout)
        observed = [problem.observation_field(i) for i in range(1, length + 1)]
        y = torch.stack([o[0] for o in observed]).flatten(1)  # [L, D], NaN = not observed
        variance = torch.stack([o[1] for o in observed]).flatten(1)  # [L, D]
        truth = torch.stack([problem.truth(i) for i in range(1, length + 1)]).double().flatten(1)  # [L, D]
    finally:
        problem.close()
    return WindowInputs(window, y, variance, "identity", truth,
                        lambda samples: write_outputs(cfg, problem, samples, truth, y, out_dir, data_dir))


def write_outputs(cfg: Config, problem, samples: torch.Tensor, truth: torch.Tensor, y: torch.Tensor,
                  out_dir: Path, data_dir: Path) -> dict:
    """``analysis.zarr`` and ``smooth.png`` from the samples ``[S, L, D]`` (normalised); the metrics (no timings)."""
    from ..data.analysis import AnalysisStore

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_total, length = samples.shape[0], samples.shape[1]
    shape = tuple(problem.state_shape)
    mean, var, rmse_t, spread_t, crps_t = scores(samples, truth)
    members = n_total if cfg.run.members else None
    attrs = {"config": cfg.to_dict(), "data": str(data_dir), "samples": n_total, "method": "smoother",
             "title": "diffda smoothed window: posterior mean and spread of the trajectory given all its observations"}
    dims = {**problem.dims(bool(members)), **{name: () for name in DIAGNOSTICS}}
    cycles = []
    for i in range(length):
        fields = problem.fields(mean[i].reshape(shape), var[i].sqrt().reshape(shape),
                                samples[:, i].reshape(n_total, *shape) if members else None)
        fields.update({name: np.array(float(v[i])) for name, v in zip(DIAGNOSTICS, (rmse_t, spread_t, crps_t))})
        cycles.append(fields)

    def fill(path: Path) -> None:
        store = AnalysisStore.create(path, problem.template(members), problem.times, attrs, DIAGNOSTICS)
        store.write_cycles(0, cycles, dims)
        store.finalise()

    write_store(out_dir / "analysis.zarr", fill)
    centre = length // 2
    plot_centre(out_dir / "smooth.png", problem, mean[centre].reshape(shape), truth[centre].reshape(shape),
                y[centre].reshape(shape),
                f"{cfg.data.preset}: smoother k={cfg.smoother.window_half_width}, S={n_total}, {cfg.guidance.method}, "
                f"C={cfg.sampler.corrections}; time {centre + 1} of {length}")
    return summary(cfg, rmse_t, spread_t, crps_t, n_total)


def plot_centre(path: Path, problem, mean: torch.Tensor, truth: torch.Tensor, y: torch.Tensor, title: str) -> None:
    """The filter's maps (smoothed mean, truth, error; observed points) of one time, physical units; nothing
    when the state holds none of the mapped panels (:data:`pipeline.evaluate.maps.PANELS`)."""
    from ..evaluate.maps import PANELS, plot_state_maps

    layout = problem.layout
    levels = [float(lv) for lv in layout.levels]
    if not any(v in layout.variables and lv in levels for v, lv, *_ in PANELS):
        return
    observed = (~torch.isnan(y)).any(0).numpy()
    write_file(path, lambda tmp: plot_state_maps(tmp, problem, mean, truth, None, observed, title))

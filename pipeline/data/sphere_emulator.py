r"""A perfect-model gridded twin: the truth sampled from the neural emulator itself.

``diffda make-data sphere --set truth=emulator`` (optionally ``checkpoint=DIR``,
``sampler_steps=S``). The first ``K`` states (``K`` the checkpoint's history) are the dinosaur
Held–Suarez states of the same ``seed`` and ``spinup_days`` (:func:`pipeline.data.sphere.simulate`);
every later state is one draw of the emulator's transition, exactly as the filter's forecast
draws it (:class:`pipeline.diffusion.sampler.Sampler` with the checkpoint's schedule, ``S``
probability-flow steps, no guidance), in normalised units ``z = (x - mean) / std``:

    z^{k+1} ~ p_theta(z^{k+1} | z^{k-K+1..k}),   x^{k+1} = mean + std z^{k+1},

with the sampler's noise from ``torch.Generator().manual_seed(seed)`` (float64 draws, a float32
network). The store has the layout of the dinosaur truth (the emulator's variables and levels,
which must be the preset's ``levels``) and is observed the same way; on it the filter's model
is exact, so any correct filter must converge, and what is left is the filter's own error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DiffdaError


def emulator_channels(meta: dict, variables: list[str], levels: list[int]) -> list[tuple[str, int]]:
    """The checkpoint's channels as ``(variable, level)``; refused unless they are ``variables x levels``."""
    chans = [(str(v), int(round(float(lv)))) for v, lv in meta["channels"]]
    want = {(v, lv) for v in variables for lv in levels}
    if set(chans) != want:
        have_levels = sorted({lv for _, lv in chans})
        raise DiffdaError(f"make-data sphere: truth=emulator needs levels equal to the checkpoint's {have_levels} "
                          f"and all of {', '.join(variables)}; got levels={levels} (set levels={have_levels})")
    return chans


@torch.no_grad()
def simulate_emulator(params: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fields ``[T, P, lat, lon]`` (float32) for ``4 days + 1`` times, sampled from the emulator."""
    from ..diffusion.sampler import Sampler
    from ..models.neural import NeuralDenoiser
    from ..models.weights import default_checkpoint
    from .sphere import VARIABLES, simulate

    tic = time.perf_counter()
    ckpt = Path(params["checkpoint"]) if params["checkpoint"] else default_checkpoint()
    if not (ckpt / "meta.json").exists():
        raise DiffdaError(f"make-data sphere: checkpoint={ckpt} is not a checkpoint directory (no meta.json)")
    den = NeuralDenoiser.from_checkpoint(ckpt, dtype=None, compile=False, cuda_graphs=False)
    chans = emulator_channels(den.meta, list(VARIABLES), params["levels"])
    k_hist = den.history
    n = 4 * params["days"] + 1
    if n <= k_hist:
        raise DiffdaError(f"make-data sphere: days={params['days']} is too short for an emulator of history {k_hist}")
    start, attrs = simulate(params, times=k_hist)  # the first K states: the real model's
    level_index = {lv: j for j, lv in enumerate(params["levels"])}
    x0 = np.stack([np.stack([start[v][:, level_index[lv]] for v, lv in chans], axis=1)])[0]  # [K, C, H, W]
    norm = den.normalisation
    z = [norm.normalise(torch.from_numpy(x0.astype(np.float64))).float()]
    cond = z[0][None]  # [1, K, C, H, W]
    shape = tuple(cond.shape[2:])
    sampler = Sampler(den, steps=params["sampler_steps"])
    gen = torch.Generator().manual_seed(params["seed"])
    draw = lambda: torch.randn((1, *shape), generator=gen, dtype=torch.float64).float()  # noqa: E731
    states = [c for c in cond[0]]
    for _ in range(n - k_hist):
        x = sampler.sample(cond, draw, shape)
        if not torch.isfinite(x).all():
            raise DiffdaError(f"make-data sphere: the emulator's rollout became non-finite after {len(states)} states")
        states.append(x[0])
        cond = torch.cat([cond[:, 1:], x[:, None]], dim=1)
    phys = norm.denormalise(torch.stack(states).double()).numpy()  # [T, C, H, W]
    out = {name: np.empty((n, len(params["levels"]), 32, 64), dtype=np.float32) for name in VARIABLES}
    for c, (v, lv) in enumerate(chans):
        out[v][:, level_index[lv]] = phys[:, c]
    for v in VARIABLES:  # the real model's states as they were, not round-tripped through float32 z
        out[v][:k_hist] = start[v]
    z_all = torch.stack(states)
    attrs = {**attrs, "truth": "emulator", "emulator_checkpoint": str(ckpt), "emulator_history": k_hist,
             "emulator_sampler_steps": params["sampler_steps"],
             "emulator_max_abs_z": round(float(z_all.abs().max()), 3),
             "seconds_total": round(time.perf_counter() - tic, 2)}
    return out, attrs

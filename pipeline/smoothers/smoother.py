r"""Guided sampling of whole trajectories: ``S`` samples of ``p(x_{1:L} | y_{1:L})``.

The posterior denoiser of the trajectory is the composed window prior (:mod:`.compose`) wrapped
by the existing likelihood guidance over all times at once (``y`` in the trajectory layout
``[L, D]``, NaN where and when nothing is observed; SDA's ``Sigma_y + sigma_t^2/alpha_t^2 Gamma`` or
MMPS); the sampler is the exponential-integrator predictor with ``C`` Langevin corrections
(:class:`pipeline.diffusion.sampler.Sampler`).

Blocks. A window of ``L`` states may be cut into blocks of at most ``block`` states: block ``b``
keeps the states ``[b c, (b+1) c)``, ``c = block - 2 overlap``, and is sampled over that core
widened by ``overlap`` states on each side (clipped to the window), with the observations of the
widened span; the widened parts are discarded. With ``overlap >= k`` and a few correlation times
the discarded edges carry the information across block boundaries; the blocks are sampled
independently, so the joint across a boundary is not kept (the marginals are). ``block = 0``: one block.

Randomness: sample ``s`` of block ``b`` draws from the stream ``(seed, stream + b, s, "propagate")``
(:mod:`pipeline.rng`), so a sample does not depend on which rank holds it or on the batch.
Shapes: ``y`` ``[L, D]``; result ``[len(indices), L, D]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.guidance import make_guidance
from ..diffusion.observation import Observation
from ..diffusion.sampler import Sampler
from ..errors import DiffdaError
from ..rng import ParticleNoise
from .compose import TrajectoryDenoiser


@dataclass
class SmootherSpec:
    """Plain settings of one smoothing (the config's ``smoother``, ``sampler`` and ``guidance``)."""

    k: int
    steps: int = 64
    eta: float = 0.0
    corrections: int = 0
    delta: float = 0.1
    t_min: float = 1e-3
    grid: str = "uniform"
    guidance: str = "mmps"
    guidance_options: dict = field(default_factory=dict)
    block: int = 0
    overlap: int = 0
    batch: int = 0  # samples per sampler batch; 0 = all at once
    jacobian: str = "windows"  # MMPS-Jacobian: windows | symmetric (:mod:`.guidance`) | composed (plain MMPS)
    stream: int = 0  # the noise streams' "cycle" slot is stream + block (e.g. the window's start)


def blocks(length: int, block: int, overlap: int, k: int) -> list[tuple[int, int, int, int]]:
    """``(lo, hi, keep_lo, keep_hi)`` per block: sample ``[lo, hi)``, keep ``[keep_lo, keep_hi)``."""
    if block == 0 or block >= length:
        return [(0, length, 0, length)]
    core = block - 2 * overlap
    if core < 1:
        raise DiffdaError(f"smoother.block ({block}) must exceed 2 * smoother.overlap ({2 * overlap})")
    out = []
    for a in range(0, length, core):
        b = min(length, a + core)
        lo, hi = max(0, a - overlap), min(length, b + overlap)
        if hi - lo < 2 * k + 1:
            raise DiffdaError(f"a block of {hi - lo} states is shorter than 2k+1 = {2 * k + 1}: "
                              f"raise smoother.block or smoother.overlap")
        out.append((lo, hi, a, b))
    return out


def posterior_denoiser(prior: TrajectoryDenoiser, obs: Observation, spec: SmootherSpec) -> Denoiser:
    """The guided trajectory denoiser: MMPS-Jacobian with ``spec.jacobian`` (:mod:`.guidance`), else ``make_guidance``."""
    if not obs.size:
        return prior
    options = dict(spec.guidance_options)
    if spec.guidance == "mmps" and options.get("covariance", "jacobian") == "jacobian" and spec.jacobian != "composed":
        from .guidance import ComposedMMPS

        return ComposedMMPS(prior, obs, options.get("cg_iterations", 8), spec.jacobian)
    return make_guidance(spec.guidance, prior, obs, **options)


def smooth(window: Denoiser, y: Tensor, variance: float | Tensor, operator: str, spec: SmootherSpec,
           seed: int, indices: Sequence[int]) -> tuple[Tensor, dict]:
    """Samples ``[len(indices), L, D]`` of the trajectory posterior (sample ``indices[j]`` in row
    ``j``), and ``{"calls", "seconds"}``: window-denoiser batch calls and their forward time."""
    length, dim = y.shape
    out = torch.empty(len(indices), length, dim, dtype=y.dtype, device=y.device)
    calls, seconds = 0, 0.0
    var = torch.as_tensor(variance, dtype=y.dtype, device=y.device)
    batch = spec.batch or max(1, len(indices))
    for b, (lo, hi, keep_lo, keep_hi) in enumerate(blocks(length, spec.block, spec.overlap, spec.k)):
        prior = TrajectoryDenoiser(window, spec.k)
        v = var.expand(length, dim)[lo:hi] if var.ndim else var
        obs = Observation.from_field(y[lo:hi], v, operator)
        posterior = posterior_denoiser(prior, obs, spec)
        sampler = Sampler(posterior, spec.steps, spec.eta, spec.corrections, spec.delta, spec.t_min, spec.grid)
        for s0 in range(0, len(indices), batch):
            rows = list(indices[s0:s0 + batch])
            noise = ParticleNoise(seed, spec.stream + b, rows, "propagate", y.device, y.dtype)
            draw = lambda: noise.normal(range(len(rows)), (hi - lo, dim))  # noqa: E731
            with torch.no_grad():
                x = sampler.sample(y.new_zeros(len(rows), 0), draw, (hi - lo, dim))
            out[s0:s0 + len(rows), keep_lo:keep_hi] = x[:, keep_lo - lo:keep_hi - lo]
        calls, seconds = calls + prior.calls, seconds + prior.seconds
    return out, {"calls": calls, "seconds": seconds}

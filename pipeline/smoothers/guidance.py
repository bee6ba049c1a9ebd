r"""MMPS over a composed trajectory prior, with a symmetric covariance in place of the composed Jacobian.

The composed denoiser (:mod:`.compose`) takes state ``i`` from the window centred on it, so its
Jacobian ``J = dx_hat/dx_t`` is banded but not symmetric when ``2k+1 < L`` (row ``i`` sees the
window of ``i``, row ``j`` that of ``j``). MMPS's ``V = sigma_t^2/alpha_t J`` then is no covariance
and CG on ``Sigma_y + A V A^T`` diverges. Here ``V = sigma_t^2/alpha_t J_bar`` with

- ``covariance="windows"``: ``J_bar`` the window Jacobians averaged over their overlaps
  (:meth:`.compose.TrajectoryDenoiser.window_covariance`: symmetric PSD; one VJP per product);
- ``covariance="symmetric"``: ``J_bar = (J + J^T)/2`` (one JVP and one VJP per product; symmetric
  but not PSD at middle noise levels when ``2k+1 < L``: measured on the linear twin, eigenvalues to -0.28);

    cov_y w = Sigma_y w + sigma_t^2/alpha_t A J_bar A^T w,
    u       = CG-solve(cov_y, y - H(x_hat)),
    d(x_t, t; y) = x_hat + sigma_t^2/alpha_t J^T A^T u                 (the gradient through x_hat).

At full width (``2k+1 = L``) and for the exact Gaussian window ``J`` is symmetric and this is MMPS.
Shapes: ``x_t`` ``[B, L, D]``, ``t`` scalar or ``[B]``; result ``[B, L, D]``, detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.guidance.common import Guidance, alpha_sigma, per_particle
from ..diffusion.guidance.mmps import conjugate_gradient
from ..diffusion.observation import Observation
from .compose import TrajectoryDenoiser


class ComposedMMPS(Guidance):
    def __init__(self, denoiser: TrajectoryDenoiser, observation: Observation, cg_iterations: int = 8,
                 covariance: str = "windows"):
        if cg_iterations < 1:
            raise ValueError(f"MMPS needs at least one conjugate-gradient iteration; got {cg_iterations}")
        if covariance not in ("windows", "symmetric"):
            raise ValueError(f"ComposedMMPS covariance must be windows or symmetric; got {covariance!r}")
        super().__init__(denoiser, observation)
        self.cg_iterations, self.covariance = cg_iterations, covariance

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self._obs.on(x_t)
        alpha_t, sigma_t = alpha_sigma(self.denoiser, t, x_t)
        scale = per_particle(sigma_t**2 / alpha_t).double()
        index, shape = obs.operator.index, x_t.shape
        f = lambda x: self.denoiser(x, t, condition)  # noqa: E731
        x_hat, vjp_fn = torch.func.vjp(f, x_t.detach())
        x_hat = x_hat.detach()
        deriv = obs.operator.derivative(x_hat).detach().double()  # [B, M]

        def lift(w: Tensor) -> Tensor:  # A^T w: [B, M] -> [B, L, D]
            z = x_t.new_zeros(shape[0], x_t[0].numel())
            z[:, index] = (deriv * w).to(z.dtype)
            return z.reshape(shape)

        windows = self.denoiser.window_covariance(x_t, t) if self.covariance == "windows" else None

        def product(v: Tensor) -> Tensor:  # J_bar v
            if windows is not None:
                return windows(v)
            return 0.5 * (torch.func.jvp(f, (x_t.detach(),), (v,))[1] + vjp_fn(v)[0])

        def cov_y(w: Tensor) -> Tensor:
            jv = product(lift(w)).flatten(1)[:, index].double()
            return obs.variance.double() * w + scale * deriv * jv

        residual = obs.y.double() - obs.operator(x_hat).double()
        u = conjugate_gradient(cov_y, residual, self.cg_iterations)
        (grad,) = vjp_fn(lift(u))
        return (x_hat + (sigma_t**2 / alpha_t * grad).to(x_hat.dtype)).detach()

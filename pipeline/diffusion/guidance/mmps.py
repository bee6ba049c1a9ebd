r"""MMPS (Rozet et al. 2024): ``p(y | x_t) ~ N(y | H(x_hat), Sigma_y + A V A^T)``, ``x_hat = d(x_t, t; c)``.

``V = V[x | x_t] = sigma_t^2 / alpha_t * J`` is Tweedie's covariance, ``J = dx_hat/dx_t`` (symmetric
for a true posterior-mean denoiser), ``A`` the Jacobian of ``H`` at ``x_hat``. With ``G = dH(x_hat)/dx_t
= A J``, whose transpose products ``G^T v`` are one vector-Jacobian product (VJP) each,

    cov_y v = Sigma_y v + sigma_t^2/alpha_t A (G^T v)                   (one VJP per product),
    u       = CG-solve(cov_y, y - H(x_hat))                              (fixed iterations, float64),
    grad_{x_t} log p(y | x_t) = G^T u                                    (gradient through x_hat only),
    d(x_t, t; c, y) = x_hat + sigma_t^2 / alpha_t * G^T u.

Cost per call: one forward pass and ``cg_iterations + 1`` VJPs through the denoiser. Exact when
the prior is Gaussian and ``H`` linear (and ``cg_iterations >= M``: CG then terminates, in exact
arithmetic, at the solution): the wrapper is then the exact posterior denoiser ``E[x | x_t, c, y]``.
CG runs in float64 whatever the state's dtype (in float32 it breaks down as the iterations near
``M``; azula's lesson).

``covariance="diagonal"`` replaces ``V`` by the denoiser's own diagonal model ``v = variance(x_t, t)``
(see :mod:`..denoiser`); then ``cov_y = Sigma_y + a^2 v[index]`` is diagonal and, with no
Jacobian of the denoiser at all,

    d(x_t, t; c, y) = x_hat + v * A^T ((y - H(x_hat)) / (Sigma_y + a^2 v[index]))   (one forward pass),

exact when the prior is Gaussian with that diagonal covariance (the exact Gaussian denoiser with
``Q = q I``). For a learned denoiser whose Jacobian is not a covariance (a network that has not
learnt to ignore ``x_t`` at high noise has large, even negative, Jacobian diagonals there) this is
the stable choice, and the cheap one. Shapes: ``x_t`` ``[B, *S]``, ``t`` scalar or ``[B]``; result ``[B, *S]``, detached.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..observation import Observation
from .common import Guidance, alpha_sigma, denoise_with_graph, per_particle


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int) -> Tensor:
    """Batched CG for symmetric positive-definite systems ``A x = b``: ``b`` ``[B, M]``, result ``[B, M]``.

    Starts from ``x = 0`` and runs exactly ``iterations`` steps (no data-dependent stopping, so the
    work is the same for every particle and batch). A row stops moving, keeping its last iterate,
    once its curvature ``p^T A p`` is not positive (Steihaug's rule: a converged row, ``p = 0``, or
    an ``A`` that is not positive definite there -- as ``Sigma_y + A V A^T`` can be when a learned
    denoiser's Jacobian is not a covariance), so the result stays finite.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(-1, keepdim=True)
    active = torch.ones_like(rr, dtype=torch.bool)
    for _ in range(iterations):
        ap = matvec(p)
        curvature = (p * ap).sum(-1, keepdim=True)
        active = active & (curvature > 0) & torch.isfinite(curvature)
        step = rr / torch.where(active, curvature, torch.ones_like(curvature))
        x = torch.where(active, x + step * p, x)
        r = torch.where(active, r - step * ap, r)
        rr_new = (r * r).sum(-1, keepdim=True)
        p = torch.where(active, r + rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)) * p, p)
        rr = rr_new
    return x


COVARIANCES = ("jacobian", "diagonal")


class MMPS(Guidance):
    def __init__(self, denoiser: Denoiser, observation: Observation, cg_iterations: int = 8,
                 covariance: str = "jacobian"):
        if cg_iterations < 1:
            raise ValueError(f"MMPS needs at least one conjugate-gradient iteration; got {cg_iterations}")
        if covariance not in COVARIANCES:
            raise ValueError(f"MMPS covariance must be one of {COVARIANCES}; got {covariance!r}")
        if covariance == "diagonal" and not hasattr(denoiser, "variance"):
            raise ValueError(f"guidance.covariance=diagonal needs a denoiser with a variance model; "
                             f"{type(denoiser).__name__} has none (use guidance.covariance=jacobian)")
        super().__init__(denoiser, observation)
        self.cg_iterations, self.covariance = cg_iterations, covariance

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        if self.covariance == "diagonal":
            return self._diagonal(x_t, t, condition)
        obs = self._obs.on(x_t)
        alpha_t, sigma_t = alpha_sigma(self.denoiser, t, x_t)
        scale = per_particle(sigma_t**2 / alpha_t).double()  # sigma_t^2 / alpha_t, 0-d or [B, 1]
        variance = obs.variance.double()
        with torch.enable_grad():
            x, x_hat = denoise_with_graph(self.denoiser, x_t, t, condition)
            y_hat = obs.operator(x_hat)  # H(x_hat), [B, M]
            deriv = obs.operator.derivative(x_hat).detach().double()  # A = diag(deriv) S

            def vjp(v: Tensor) -> Tensor:  # G^T v = J^T A^T v: [B, M] -> [B, *S]
                (g,) = torch.autograd.grad(y_hat, x, grad_outputs=v.to(y_hat.dtype), retain_graph=True)
                return g

            def cov_y(v: Tensor) -> Tensor:  # (Sigma_y + A V A^T) v, float64 [B, M]
                gv = vjp(v).flatten(1)[:, obs.operator.index].double()
                return variance * v + scale * deriv * gv

            residual = (obs.y.double() - y_hat.detach().double())
            u = conjugate_gradient(cov_y, residual, self.cg_iterations)
            grad = vjp(u)
        return (x_hat + (sigma_t**2 / alpha_t * grad).to(x_hat.dtype)).detach()

    def _diagonal(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        obs = self._obs.on(x_t)
        x_hat = self.denoiser(x_t, t, condition).detach()
        v = self.denoiser.variance(x_t, t).expand_as(x_hat).flatten(1)[:, obs.operator.index].double()  # [B, M]
        deriv = obs.operator.derivative(x_hat).double()  # [B, M]
        residual = obs.y.double() - obs.operator(x_hat).double()
        gain = v * deriv * residual / (obs.variance.double() + deriv**2 * v)  # (V A^T u)[index]
        out = x_hat.flatten(1).clone()
        out[:, obs.operator.index] += gain.to(out.dtype)
        return out.reshape(x_hat.shape)

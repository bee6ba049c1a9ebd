r"""A localised particle filter with the diffusion proposal, in the manner of Penny & Miyoshi (2016).

Per cycle:

1. predictive means ``m_i = d(sigma_1 eps_i, t = 1; x^k_i)`` (as :mod:`.pf_optimal`); per-observation
   log-likelihoods ``l_io = log N(y_o | H(m_i)_o, r_o)`` (the seed's weights; ``[N, M]``, all ranks);
2. local log-weights per column ``p`` with R-localisation, ``log w_pi = log w_i + alpha_p sum_o
   GC(d_po / c) l_io`` (the taper divides ``r_o``, as in the LETKF); ``alpha_p`` by adaptive
   tempering per column when ``band`` is set (:mod:`.tempering`'s rule, vectorised over columns);
3. local systematic resampling: per column, ancestors ``a_pj`` from the column's weights with ONE
   uniform shared by all columns (and ranks), so neighbouring columns whose weights agree pick the
   same parents for the same slot ``j`` (sorted ancestors: a small change of weights moves few slots);
4. continuity: the resampling is the transform ``T_p[a, j] = 1{a_pj = a}``; it is smoothed over
   neighbouring columns, ``T~_p = sum_q s_pq T_q`` (``s`` row-normalised Gaspari–Cohn of half-width
   ``c / 4``), so where neighbours pick different parents the member is a convex blend of them
   instead of a seam; ``x~_j(p) = sum_a x_a(p) T~_p[a, j]`` on the current (and carried past) states,
   by the column all-to-all of :mod:`.columns`;
4b. spread restoration (when ``rtps > 0`` or ``inflation > 1``): resampling duplicates parents and
   the blend of step 4 averages them, so the resampled ensemble's spread falls below the weighted
   posterior spread ``sigma^w_p = (sum_i w_pi (x_i - xbar^w)^2)^{1/2}``, cycle after cycle, and the
   filter loses the spread its weights need (the collapse Poterjoy 2016 answers by merging with
   prior members). Per column and field the resampled anomalies are rescaled,
   ``x~_j <- xbar~ + (x~_j - xbar~) rho sigma^t / sigma~``, to the target
   ``sigma^t = a sigma^f + (1 - a) sigma^w`` (``a = rtps``: relaxation to the prior spread
   ``sigma^f`` of Whitaker & Hamill 2012, as in the LETKF; ``rho = inflation``); columns where the
   resampled spread is zero are left as they are. The carried past states get the same treatment.
   With ``transform = "netf"`` steps 3–4 are replaced by the local nonlinear ensemble transform
   (NETF, Tödter & Ahrens 2015; localised as in Tödter et al. 2016): per column
   ``T_p = w_p 1^T + sqrt(N) (diag(w_p) - w_p w_p^T)^{1/2}`` (symmetric square root), so the new
   members ``x~_j(p) = sum_a x_a(p) T_p[a, j]`` have the weighted mean ``sum_a w_pa x_a(p)`` and the
   weighted covariance exactly, deterministically and without duplicates: no sampling noise, and
   fields stay smooth because the local weights vary smoothly with the tapered likelihoods (no
   blending needed). Uniform weights give ``T_p = I``;
4c. hybrid (``hybrid = h > 0``, NETF only): the NETF takes the share ``1 - gamma_p`` of each column's
   likelihood, ``gamma_p = h (1 - N^eff_p / N)`` from the untempered local weights, and a local ETKF
   step with ``R / gamma_p`` follows on the NETF's members (:mod:`.hybrid`; Nerger 2022's LKNETF); the
   spread target of step 4b then uses the hybrid ensemble's own spread as ``sigma^w``;
5. propagation from ``x~_j`` by guided reverse diffusion (the proposal uses the true ``Sigma_y``);
   weights are uniform afterwards (the local weights are spent in the resampling).

With an infinite radius every column has the global weights, the same ancestors and no smoothing:
step 3 is the global systematic resampling with ``shared_uniform(seed, cycle)`` and the filter is
:class:`.pf_optimal.OptimalProposalPF` with seed weights resampling every cycle. Diagnostics: ESS
and ``alpha`` are means over columns. Jitter (``filter.regularization``) is not applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.observation import Observation
from ..distributed.comm import Comm
from ..rng import shared_uniform
from .base import CycleResult, Diagnostics
from .columns import all_ids, column_block, from_columns, to_columns
from .ensemble import Ensemble, advance, gather_rows, global_log_weights, weighted_moments
from .hybrid import hybrid_gamma, kalman_after
from .localisation import Geometry, local_observations, smoothing_matrix
from .propagate import Propagator
from .tempering import adaptive_alpha_columns, batched_ess

SMOOTHING_FRACTION = 0.25  # half-width of the transform smoothing, as a fraction of the localisation radius


def per_obs_log_likelihood(obs: Observation, hx: Tensor) -> Tensor:
    """``log N(y_o | hx_io, r_o)`` ``[B, M]`` float64."""
    var = obs.variance.double().to(hx.device)
    r = obs.y.double().to(hx.device) - hx.double()
    return -0.5 * (r**2 / var + torch.log(2 * torch.pi * var))


def local_systematic(log_w: Tensor, u: float) -> Tensor:
    """Ancestors ``[P, N]`` (sorted per row) by systematic resampling of each row of normalised
    log-weights ``[P, N]`` with the one uniform ``u`` (as :func:`.resampling.systematic`, per row)."""
    p, n = log_w.shape
    cdf = torch.cumsum(torch.exp(log_w), 1)
    cdf[:, -1] = 1.0
    points = ((torch.arange(n, dtype=torch.float64) + u) / n).expand(p, n).contiguous()
    return torch.searchsorted(cdf, points, right=True).clamp(max=n - 1)


@dataclass
class LocalPF:
    comm: Comm
    propagator: Propagator
    state_shape: tuple[int, ...]
    geometry: Geometry
    n_total: int
    radius: float | None = None  # Gaspari–Cohn half-width c; None = infinite (the global PF)
    seed: int = 0
    band: tuple[float, float] | None = None  # adaptive tempering per column
    history: int = 1
    rtps: float = 0.0  # relaxation of the resampled spread to the prior's (step 4b)
    inflation: float = 1.0  # multiplies the target spread of step 4b
    transform: str = "resample"  # "resample" (steps 3-4) | "netf"
    hybrid: float = 0.0  # h of step 4c (netf only): the Kalman step's share of the likelihood, gamma = h (1 - ESS/N)

    def cycle(self, ens: Ensemble, cycle: int, observation: Observation) -> CycleResult:
        comm, p, shape = self.comm, self.propagator, self.state_shape
        m = p.predict_mean(ens.x, ens.ids, cycle, shape)
        forecast_mean, _ = weighted_moments(comm, m, ens.log_w)
        log_prior = global_log_weights(comm, ens.ids, ens.log_w)  # [N]
        x = ens.x
        diag = Diagnostics(ess=float(batched_ess(log_prior[None])[0]))
        if observation.size:
            hm = observation.operator(m) if ens.n_local else m.new_zeros((0, observation.size))
            hm = gather_rows(comm, ens.ids, hm.double().cpu())[0]  # [N, M]
            log_w, diag, gamma = self.local_weights(log_prior, per_obs_log_likelihood(observation, hm), observation)
            x = self.update(ens.ids, ens.x, log_w, cycle, None if gamma is None else (gamma, hm, observation))
            diag.resampled = True
        log_w_new = torch.full((ens.n_local,), -math.log(self.n_total), dtype=torch.float64)
        x_next = p.propagate(x, ens.ids, cycle, shape, observation)
        return CycleResult(Ensemble(ens.ids, advance(x, x_next, self.history), log_w_new), forecast_mean, diag)

    def local_weights(self, log_prior: Tensor, ll: Tensor, obs: Observation) -> tuple[Tensor, Diagnostics, Tensor | None]:
        """Normalised local log-weights ``[P, N]`` of every column, the diagnostics, and the hybrid's
        ``gamma`` ``[P]`` (None without step 4c; then ``alpha`` is the tempering exponent, with it
        ``1 - gamma``)."""
        geo = self.geometry
        if self.radius is None:  # one set of weights: the global filter's, summed in its order
            lik = ll.sum(1)[None, :]
        else:
            local = local_observations(geo, geo.columns_of(obs.operator.index), self.radius)
            lik = (ll.T[local.index] * local.coef[:, :, None]).sum(1)  # [P, N]
        gamma = hybrid_gamma(lik, log_prior, self.hybrid) if self.hybrid > 0 else None
        if gamma is not None:
            alpha = 1.0 - gamma
        elif self.band is not None:
            alpha = adaptive_alpha_columns(log_prior, lik, self.band)
        else:
            alpha = torch.ones(lik.shape[0], dtype=torch.float64)
        lw = log_prior[None, :] + alpha[:, None] * lik
        if not bool(torch.isfinite(lw).any(1).all()):
            raise FloatingPointError("pf-local: every particle has zero local weight in some column")
        lw = lw - torch.logsumexp(lw, 1, keepdim=True)
        d = Diagnostics(ess=float(batched_ess(lw).mean()), alpha=float(alpha.mean()))
        if lw.shape[0] == 1:
            lw = lw.expand(geo.n_columns, -1)
            gamma = None if gamma is None else gamma.expand(geo.n_columns)
        return lw, d, gamma

    def update(self, ids: Tensor, x: Tensor, log_w: Tensor, cycle: int,
               kalman: tuple[Tensor, Tensor, Observation] | None = None) -> Tensor:
        """``x~_j(p) = sum_a x_a(p) T~_p[a, j]`` for this rank's slots ``j`` (``x`` ``[n, (K,) *S]``) with
        the local log-weights ``log_w`` ``[P, N]``: steps 3–4 (``resample``) or the NETF, then step 4b;
        ``kalman = (gamma [P], observed members [N, M], observation)`` adds step 4c after the NETF."""
        comm, P, n = self.comm, self.geometry.n_columns, self.n_total
        block = column_block(P, comm.size, comm.rank)
        rank_ids = all_ids(comm, ids)
        xc = to_columns(comm, ids, x.reshape(len(ids), -1, P), n, rank_ids)  # [N, F, P_q]
        if self.transform == "netf":
            rows = block if self.radius is not None else slice(0, 1)  # one transform for all columns if global
            T = netf_transform(log_w[rows])  # [P_q or 1, N, N]
            if kalman is not None:
                gamma, hx, obs = kalman
                geo = self.geometry
                local = local_observations(geo, geo.columns_of(obs.operator.index), self.radius,
                                           torch.arange(P)[rows])
                T = kalman_after(T, hx, obs.y.cpu(), 1.0 / obs.variance.double().cpu(), local, gamma[rows])
            out = torch.einsum("ifq,qij->jfq", xc.double().cpu(), T.expand(xc.shape[2], -1, -1))
            out = out.to(xc.dtype).to(xc.device)
            return self._restored(xc, out, None if kalman is not None else log_w[block], P, rank_ids, x)
        ancestors = local_systematic(log_w, shared_uniform(self.seed, cycle))  # [P, N]
        if self.radius is None:  # identical ancestors everywhere: an exact gather
            a = ancestors[0].to(xc.device)
            out = xc[a]
        else:
            T = torch.zeros(P, n, n, dtype=torch.float64)
            T.scatter_(1, ancestors[:, None, :], 1.0)  # T[p, a_pj, j] = 1
            S = smoothing_matrix(self.geometry, SMOOTHING_FRACTION * self.radius)[block]  # [P_q, P]
            Ts = torch.einsum("qp,pij->qij", S, T)  # [P_q, N, N]
            out = torch.einsum("ifq,qij->jfq", xc.double().cpu(), Ts).to(xc.dtype).to(xc.device)
        return self._restored(xc, out, log_w[block], P, rank_ids, x)

    def _restored(self, xc: Tensor, out: Tensor, log_w: Tensor | None, P: int, rank_ids: list[Tensor], x: Tensor) -> Tensor:
        """Step 4b on this rank's columns (``log_w`` ``[P_q, N]``; None: ``out`` is itself the analysis
        ensemble, step 4c), then the members back to their ranks."""
        if self.rtps > 0 or self.inflation != 1.0:
            out = restore_spread(xc, out, None if log_w is None else log_w.T, self.rtps, self.inflation)
        return from_columns(self.comm, out, P, rank_ids).reshape(x.shape).to(x.device, x.dtype)


def netf_transform(log_w: Tensor) -> Tensor:
    """The NETF transforms ``T_p = w_p 1^T + sqrt(N) (diag(w_p) - w_p w_p^T)^{1/2}`` ``[P, N, N]`` of
    normalised log-weights ``[P, N]`` (Tödter & Ahrens 2015, eq. 11 without the random rotation):
    ``sum_j T_p[a, j] / N = w_pa`` and ``(T_p - w_p 1^T)(T_p - w_p 1^T)^T / N = diag(w_p) - w_p w_p^T``."""
    w = torch.exp(log_w.double().cpu())
    n = w.shape[1]
    a = torch.diag_embed(w) - w[:, :, None] * w[:, None, :]
    lam, v = torch.linalg.eigh(a)
    # ``a`` is PSD with ``a 1 = 0``: eigenvalues at round-off level are zero (their square root,
    # ~1e-9, would otherwise leak into ``T``; uniform weights must give ``T = I`` exactly enough).
    tol = lam.amax(1, keepdim=True).clamp_min(0.0) * n * torch.finfo(lam.dtype).eps
    root = (v * torch.sqrt(torch.where(lam > tol, lam, torch.zeros_like(lam)))[:, None, :]) @ v.transpose(1, 2)
    return w[:, :, None] + math.sqrt(n) * root


def restore_spread(prior: Tensor, resampled: Tensor, log_w: Tensor | None, rtps: float, inflation: float) -> Tensor:
    """Step 4b: ``resampled`` ``[N, F, Q]`` with its anomalies rescaled per (field, column) to
    ``inflation (rtps sigma^f + (1 - rtps) sigma^w)``, where ``sigma^f`` is the spread of ``prior``
    ``[N, F, Q]`` and ``sigma^w`` its spread under the normalised log-weights ``log_w`` ``[N, Q]``
    (None: the spread of ``resampled`` itself, an analysis ensemble already, as the LETKF's RTPS)."""
    xp, xr = prior.double().cpu(), resampled.double().cpu()
    sigma_f = xp.std(0, unbiased=False)
    mean_r = xr.mean(0)
    sigma_r = xr.std(0, unbiased=False)
    if log_w is None:
        sigma_w = sigma_r
    else:
        w = torch.exp(log_w.double().cpu())[:, None, :]  # [N, 1, Q]
        mean_w = (w * xp).sum(0)
        sigma_w = torch.sqrt((w * (xp - mean_w) ** 2).sum(0))
    target = inflation * (rtps * sigma_f + (1 - rtps) * sigma_w)
    scale = torch.where(sigma_r > 1e-12 * (1 + sigma_f), target / sigma_r.clamp_min(1e-300), torch.ones_like(sigma_r))
    return (mean_r + (xr - mean_r) * scale).to(resampled.dtype).to(resampled.device)

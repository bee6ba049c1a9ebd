r"""The training-free KDE window denoiser: the closed-form mixture over windows cut from an archive run.

From an archive trajectory ``z_{1:n+2k}`` (or several chains) the ``n`` stacked windows ``X_j = z_{j:j+2k}`` (``W = 2k+1``
states, ``W D`` values each) give the KDE ``p(x) = 1/n sum_j N(x; X_j, diag(h^2))`` with Scott's
bandwidth ``h = bw n^(-1/(W D + 4)) std`` per entry. Noised, ``p(x_t) = 1/n sum_j N(x_t; alpha_t X_j,
diag(alpha_t^2 h^2 + sigma_t^2))``, so, with ``pi_j`` the softmax of the log of those terms,

    d(x_t, t) = sum_j pi_j m_j,   m_j = X_j + alpha_t h^2 / (alpha_t^2 h^2 + sigma_t^2) (x_t - alpha_t X_j),
    V[x | x_t] = h^2 sigma_t^2 / (alpha_t^2 h^2 + sigma_t^2) + sum_j pi_j m_j^2 - d^2   (diagonal).

(design.md §2: the KDE denoiser of Binder & Oberai, here unconditional over stacked states.)

Bandwidth by likelihood cross-validation (``model.bandwidth=cv``; Silverman 1986, §3.4.4): the factor
``bw`` of the grid ``CV_FACTORS`` that maximises the mean log-density of held-out windows (cut from
other runs of the same chain, never the archive's) under the KDE, :func:`cv_factor`. It needs no truth
and no observation: it measures the prior alone.
Shapes: ``x_t`` ``[B, W, D]``, ``t`` scalar or ``[B]``, condition ignored; result ``[B, W, D]``;
time ``O(B n W D)``, memory ``O(B n + n W D)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule
from ..models.kde import scott_bandwidth


def cut_windows(trajectory: Tensor, k: int) -> Tensor:
    """All windows of ``2k+1`` consecutive states of ``trajectory`` ``[T, D]`` (``T - 2k`` of them) or of
    each of the chains ``[C, T, D]`` (``C (T - 2k)``): ``[n, 2k+1, D]``."""
    chains = trajectory if trajectory.ndim == 3 else trajectory[None]
    return chains.unfold(1, 2 * k + 1, 1).permute(0, 1, 3, 2).flatten(0, 1).contiguous()


def mixture_weights(x: Tensor, alpha: Tensor, var: Tensor, X: Tensor) -> Tensor:
    """``pi_j ∝ exp(-|x - alpha X_j|² / (2 var))`` (diagonal ``var``), ``[B, n]``, for ``x`` ``[B, E]``,
    ``X`` ``[n, E]``, ``alpha`` ``[B or 1, 1]`` and ``var`` ``[B or 1, E]``.

    The squared distances come from one matrix product of the whitened ``x / sqrt(var)`` and
    ``alpha X / sqrt(var)`` (no ``[B, n, E]`` intermediate); the ``|x|²`` term is the same for every ``j``.
    """
    a = x / var.sqrt()
    if var.shape[0] == 1:
        b = alpha * X / var.sqrt()  # [n, E]
        cross, bb = a @ b.T, (b**2).sum(-1)[None]
    else:  # per-sample times: b_j = alpha X_j / sqrt(var) differs by sample
        w = alpha / var.sqrt()  # [B, E]
        cross, bb = (a * w) @ X.T, (w**2) @ (X**2).T
    return torch.softmax(cross - 0.5 * bb, dim=-1)


CV_FACTORS = tuple(float(f) for f in torch.logspace(-1.7, 0.0, 13, dtype=torch.float64))  # 0.02 .. 1, x 1.39


def kde_log_density(x: Tensor, X: Tensor, h: Tensor, batch: int = 256) -> Tensor:
    """``log (1/n sum_j N(x_i; X_j, diag(h^2)))`` for ``x`` ``[m, E]``, ``X`` ``[n, E]``, ``h`` ``[E]``: ``[m]``
    (one matrix product per batch of ``batch`` rows, no ``[m, n, E]`` intermediate)."""
    a_all, b = x / h, X / h
    bb = (b**2).sum(-1)
    const = -torch.log(h).sum() - 0.5 * h.numel() * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
    out = []
    for a in a_all.split(batch):
        d2 = (a**2).sum(-1, keepdim=True) - 2 * a @ b.T + bb[None]
        out.append(torch.logsumexp(-0.5 * d2.clamp(min=0.0), dim=-1))
    return torch.cat(out) - torch.log(torch.tensor(float(X.shape[0]), dtype=x.dtype)) + const


def cv_factor(archive: Tensor, held: Tensor, factors: tuple[float, ...] = CV_FACTORS) -> float:
    """The factor on Scott's rule maximising the mean held-out log-density, ``archive`` ``[n, E]``,
    ``held`` ``[m, E]`` (rows of the same law, not in the archive)."""
    scores = [float(kde_log_density(held, archive, scott_bandwidth(archive, archive.shape[1], f)).mean())
              for f in factors]
    return factors[max(range(len(factors)), key=scores.__getitem__)]


class KDEWindowDenoiser:
    def __init__(self, schedule: Schedule, windows: Tensor, bandwidth: float | None = None):
        if windows.ndim != 3:
            raise ValueError(f"archive windows must be [n, W, D]; got {tuple(windows.shape)}")
        self.schedule = schedule
        self.width, self.dim = windows.shape[1], windows.shape[2]
        self.k = (self.width - 1) // 2
        self.windows = windows.flatten(1)  # [n, W D]
        self.factor = 1.0 if bandwidth is None else bandwidth
        self.h = scott_bandwidth(self.windows, self.windows.shape[1], self.factor)

    def rows(self, windows: Tensor) -> Tensor:
        """Windows ``[m, W, D]`` as rows of the archive's law, ``[m, W D]`` (for :func:`cv_factor`)."""
        return windows.flatten(1)

    def archive_rows(self) -> Tensor:
        return self.windows

    @classmethod
    def from_trajectory(cls, schedule: Schedule, trajectory: Tensor, k: int,
                        bandwidth: float | None = None) -> "KDEWindowDenoiser":
        """The KDE of the windows of ``trajectory`` (:func:`cut_windows`)."""
        return cls(schedule, cut_windows(trajectory, k), bandwidth)

    def _mixture(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``pi`` ``[B, n]``, the shrink ``1 - alpha c``, ``c = alpha h^2 / var`` and ``h^2 sigma^2 / var`` ``[.., W D]``;
        ``m_j = (1 - alpha c) X_j + c x_t``."""
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device),
                                                 x_t.flatten(1)))
        alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        X, h2 = self.windows.to(x_t.dtype), (self.h**2).to(x_t.dtype)
        var = alpha**2 * h2 + sigma**2  # [B or 1, W D]
        pi = mixture_weights(x_t.flatten(1), alpha, var, X)
        c = alpha * h2 / var
        return pi, 1 - alpha * c, c, h2 * sigma**2 / var

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        pi, shrink, c, _ = self._mixture(x_t, t)
        X = self.windows.to(x_t.dtype)
        return (shrink * (pi @ X) + c * x_t.flatten(1)).reshape(x_t.shape)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``within + (1 - alpha c)^2 (sum_j pi_j X_j^2 - (sum_j pi_j X_j)^2)``, diagonal, ``[B, W, D]``."""
        pi, shrink, _, within = self._mixture(x_t, t)
        X = self.windows.to(x_t.dtype)
        spread = (pi @ X**2 - (pi @ X) ** 2).clamp(min=0.0)
        return (within + shrink**2 * spread).reshape(x_t.shape)


class LocalKDEWindowDenoiser:
    r"""The KDE window denoiser made local on a ring of ``D`` positions (Lorenz-96).

    The Markov-blanket argument of the window composition, applied across space: position ``p`` of the
    window takes its entry from the KDE of the patch of ``2r+1`` neighbouring positions centred on it
    (over all ``W`` states: ``W (2r+1)`` values instead of ``W D``). The ring is homogeneous, so the
    patches of every position of every archive window form one archive, of which ``patches`` rows are kept
    (drawn without replacement, seeded). With ``P_p`` the patch of ``x_t`` at ``p`` and the mixture of
    :class:`KDEWindowDenoiser` over the archive patches ``Z_j``,

        d(x_t, t)_{., p} = sum_j pi_j(P_p) m_{j, centre},   m_j = Z_j + alpha_t h^2 / (alpha_t^2 h^2 + sigma_t^2) (P_p - alpha_t Z_j).

    Shapes: ``x_t`` ``[B, W, D]``; result ``[B, W, D]``; time ``O(B D n_p W (2r+1))``.
    """

    def __init__(self, schedule: Schedule, windows: Tensor, half_width: int, patches: int,
                 bandwidth: float | None = None, seed: int = 0):
        if windows.ndim != 3:
            raise ValueError(f"archive windows must be [n, W, D]; got {tuple(windows.shape)}")
        _, self.width, self.dim = windows.shape
        if not 0 <= 2 * half_width < self.dim:
            raise ValueError(f"patch half-width {half_width} must leave the patch (2r+1 positions) inside the "
                             f"ring of {self.dim}")
        self.schedule, self.r = schedule, half_width
        self.k = (self.width - 1) // 2
        self.index = (torch.arange(self.dim)[:, None] + torch.arange(-half_width, half_width + 1)[None]) % self.dim
        pool = self._patches(windows)  # [n D, W (2r+1)]
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(pool.shape[0], generator=g)[:patches] if patches < pool.shape[0] else slice(None)
        self.patches = pool[keep].contiguous()
        self.centre = self.patches.reshape(-1, self.width, 2 * half_width + 1)[:, :, half_width]  # [n_p, W]
        self.factor = 1.0 if bandwidth is None else bandwidth
        self.h = scott_bandwidth(self.patches, self.patches.shape[1], self.factor)

    def rows(self, windows: Tensor) -> Tensor:
        """Windows ``[m, W, D]`` as rows of the archive's law: their patches, ``[m D, W (2r+1)]``."""
        return self._patches(windows)

    def archive_rows(self) -> Tensor:
        return self.patches

    @classmethod
    def from_trajectory(cls, schedule: Schedule, trajectory: Tensor, k: int, half_width: int, patches: int,
                        bandwidth: float | None = None, seed: int = 0) -> "LocalKDEWindowDenoiser":
        """The local KDE of the windows of ``trajectory`` (:func:`cut_windows`)."""
        return cls(schedule, cut_windows(trajectory, k), half_width, patches, bandwidth, seed)

    def _patches(self, x: Tensor) -> Tensor:
        """``[B, W, D]`` -> the patch of every position, ``[B D, W (2r+1)]`` (centre at offset ``r``)."""
        b = x.shape[0]
        return x[:, :, self.index.to(x.device)].permute(0, 2, 1, 3).reshape(b * self.dim, -1)

    def _mixture(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``pi`` ``[B D, n_p]`` and, on the centre entries ``[.., W]``: ``1 - alpha c``, ``c``, ``h^2 sigma^2 / var``."""
        alpha, sigma = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device),
                                                 x_t.flatten(1)))
        alpha, sigma = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        if alpha.shape[0] > 1:  # per-sample times: one row per (sample, position) patch
            alpha, sigma = alpha.repeat_interleave(self.dim, 0), sigma.repeat_interleave(self.dim, 0)
        h2 = (self.h**2).to(x_t.dtype)
        var = alpha**2 * h2 + sigma**2  # [B D or 1, W (2r+1)]
        pi = mixture_weights(self._patches(x_t), alpha, var, self.patches.to(x_t.dtype))  # [B D, n_p]
        centre = slice(self.r, None, 2 * self.r + 1)  # the centre entries of the flattened [W, 2r+1]
        c = (alpha * h2 / var)[:, centre]
        return pi, 1 - alpha * c, c, (h2 * sigma**2 / var)[:, centre]

    def _unpatch(self, v: Tensor, b: int) -> Tensor:
        """``[B D, W]`` (position-major) -> ``[B, W, D]``."""
        return v.reshape(b, self.dim, self.width).transpose(1, 2)

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        b = x_t.shape[0]
        pi, shrink, c, _ = self._mixture(x_t, t)
        x_c = x_t.transpose(1, 2).reshape(b * self.dim, self.width)
        out = shrink * (pi @ self.centre.to(x_t.dtype)) + c * x_c
        return self._unpatch(out, b).reshape(x_t.shape)

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """As :meth:`KDEWindowDenoiser.variance`, per position from its patch's mixture: ``[B, W, D]``."""
        b = x_t.shape[0]
        pi, shrink, _, within = self._mixture(x_t, t)
        C = self.centre.to(x_t.dtype)
        spread = (pi @ C**2 - (pi @ C) ** 2).clamp(min=0.0)
        return self._unpatch(within + shrink**2 * spread, b).reshape(x_t.shape)

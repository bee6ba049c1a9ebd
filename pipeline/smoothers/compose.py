r"""The whole-trajectory denoiser composed from a window denoiser (SDA, Figure 1).

For a first-order Markov chain the score of a noised trajectory decomposes approximately over
Markov blankets of half-width ``k``:

    grad_{x_i(t)} log p(x_{1:L}(t)) ~ grad_{x_i(t)} log p(x_{i-k:i+k}(t)),

and since ``score = (alpha_t d - x_t) / sigma_t^2`` the same composition holds for the denoiser: state
``i`` takes its entry from the window centred on it, ``d_i = d_W(x_{i-k:i+k}(t))[k]``; the first ``k``
states from the first window (``d_W(x_{0:W})[i]``), the last ``k`` from the last window. All
``L - 2k`` windows are denoised in one batch.

Shapes: ``x_t`` ``[B, L, D]``, ``t`` scalar or ``[B]``; the window denoiser sees ``[B (L-2k), W, D]``
windows, ``W = 2k+1``, with an empty condition ``[B (L-2k), 0]``; result ``[B, L, D]``.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..errors import DiffdaError


def centre_index(length: int, k: int) -> tuple[Tensor, Tensor]:
    """``(window, entry)`` ``[L]`` each: which window (by start) and which entry gives state ``i``."""
    if length < 2 * k + 1:
        raise DiffdaError(f"a window of {length} states is shorter than 2k+1 = {2 * k + 1} "
                          f"(smoother.window_half_width = {k})")
    i = torch.arange(length)
    start = (i - k).clamp(0, length - 2 * k - 1)
    return start, i - start


class TrajectoryDenoiser:
    """``TrajectoryDenoiser(window_denoiser, k)(x_t [B, L, D], t, condition) -> [B, L, D]``."""

    def __init__(self, window: Denoiser, k: int):
        if k < 0:
            raise DiffdaError(f"smoother.window_half_width must be >= 0; got {k}")
        self.window, self.k, self.width = window, k, 2 * k + 1
        self.schedule = window.schedule
        self.calls = 0  # window-denoiser batch calls
        self.seconds = 0.0  # their forward time

    def _windows(self, x: Tensor) -> Tensor:
        """``[B, L, D] -> [B, L-2k, W, D]`` (all windows by their start)."""
        return x.unfold(1, self.width, 1).permute(0, 1, 3, 2)

    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        b, length, d = x_t.shape
        start, entry = centre_index(length, self.k)
        windows = self._windows(x_t)  # [B, n, W, D]
        n = windows.shape[1]
        t = torch.as_tensor(t)
        tw = t if t.ndim == 0 else t.repeat_interleave(n)
        self.calls += 1
        start_s = time.perf_counter()
        out = self.window(windows.reshape(b * n, self.width, d), tw, x_t.new_zeros(b * n, 0))
        self.seconds += time.perf_counter() - start_s
        out = out.reshape(b, n, self.width, d)
        return out[:, start.to(x_t.device), entry.to(x_t.device)]

    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The window denoiser's diagonal variance composed the same way: ``[B, L, D]``."""
        b, length, d = x_t.shape
        start, entry = centre_index(length, self.k)
        windows = self._windows(x_t)
        n = windows.shape[1]
        t = torch.as_tensor(t)
        tw = t if t.ndim == 0 else t.repeat_interleave(n)
        v = self.window.variance(windows.reshape(b * n, self.width, d), tw)
        v = v.expand(b * n, self.width, d).reshape(b, n, self.width, d)
        return v[:, start.to(x_t.device), entry.to(x_t.device)]

    def window_covariance(self, x_t: Tensor, t: Tensor):
        r"""``V v`` for the overlap-averaged window covariance, as a function of ``v`` ``[B, L, D]``.

        ``V = N^{-1/2} (sum_w P_w^T V_w P_w) N^{-1/2}``, ``V_w = sigma_t^2/alpha_t J_w`` the Tweedie
        covariance of window ``w`` (``J_w`` its denoiser's Jacobian, symmetric PSD for a posterior-mean
        denoiser), ``P_w`` the window's selection, ``N = diag(n_i)`` the windows covering state ``i``:
        symmetric and PSD whatever ``k``, with the window's own variances on the diagonal when
        ``n_i = 1``. Products are VJPs through one retained graph of all windows; the caller scales
        by ``sigma_t^2/alpha_t``. Returns ``matvec(v) -> J_bar v`` (without that factor).
        """
        b, length, d = x_t.shape
        n = length - 2 * self.k
        t = torch.as_tensor(t)
        tw = t if t.ndim == 0 else t.repeat_interleave(n)
        leaf = self._windows(x_t.detach()).reshape(b * n, self.width, d).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.window(leaf, tw, x_t.new_zeros(b * n, 0))
        cover = torch.zeros(length, dtype=x_t.dtype, device=x_t.device)
        for e in range(self.width):
            cover[e:e + n] += 1
        root = cover.rsqrt()[None, :, None]  # N^{-1/2}

        def matvec(v: Tensor) -> Tensor:
            vw = self._windows(v * root).reshape(b * n, self.width, d)
            (g,) = torch.autograd.grad(out, leaf, grad_outputs=vw, retain_graph=True)
            g = g.reshape(b, n, self.width, d)
            acc = v.new_zeros(b, length, d)
            for e in range(self.width):  # fold: window s, entry e -> state s + e
                acc[:, e:e + n] += g[:, :, e]
            return acc * root

        return matvec

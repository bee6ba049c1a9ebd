"""Shared pieces of the guidance wrappers: time broadcasting and the Tweedie step."""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser, expand_time


def alpha_sigma(denoiser: Denoiser, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha_t, sigma_t`` broadcastable against ``like`` ``[B, *S]``."""
    return denoiser.schedule(expand_time(torch.as_tensor(t, dtype=like.dtype, device=like.device), like))


def denoise_with_graph(denoiser: Denoiser, x_t: Tensor, t: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
    """``(x_t requiring grad, x_hat)`` with the graph from ``x_t`` to ``x_hat`` kept."""
    x = x_t.detach().requires_grad_(True)
    return x, denoiser(x, t, condition)

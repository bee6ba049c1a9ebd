r"""Observations ``y = H(x) + v``, ``v ~ N(0, diag(variance))``, with missing values.

``H`` is an elementwise function ``f`` (``identity``, ``abs``, ``square``, ``arctan``) applied to
the state, then a selection of observed entries: ``H(x) = f(x)[index]``. Observation stores hold
``y`` in the state's own layout with NaN where not observed; :meth:`Observation.from_field` drops
the NaNs, so a NaN contributes nothing anywhere downstream.

Shapes: state ``x`` is ``[B, *S]``; ``H(x)`` is ``[B, M]``; ``y`` and ``variance`` are ``[M]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OPERATORS = ("identity", "abs", "square", "arctan")


def apply_fn(fn: str, x: Tensor) -> Tensor:
    """Elementwise ``f(x)`` for an operator name."""
    if fn == "identity":
        return x
    if fn == "abs":
        return x.abs()
    if fn == "square":
        return x**2
    if fn == "arctan":
        return torch.atan(x)
    raise ValueError(f"unknown observation operator {fn!r}; choose one of {OPERATORS}")


def apply_fn_derivative(fn: str, x: Tensor) -> Tensor:
    """Elementwise ``f'(x)``."""
    if fn == "identity":
        return torch.ones_like(x)
    if fn == "abs":
        return torch.sign(x)
    if fn == "square":
        return 2 * x
    if fn == "arctan":
        return 1 / (1 + x**2)
    raise ValueError(f"unknown observation operator {fn!r}; choose one of {OPERATORS}")


@dataclass(frozen=True)
class ObservationOperator:
    """``H(x) = f(x.flatten(1))[:, index]``; ``index`` is ``[M]`` flat indices into ``S``."""

    index: Tensor
    fn: str = "identity"

    def __call__(self, x: Tensor) -> Tensor:
        return apply_fn(self.fn, x.flatten(1)[:, self.index])

    def derivative(self, x: Tensor) -> Tensor:
        """Diagonal of the Jacobian restricted to observed entries, ``f'(x)[index]``: ``[B, M]``.

        The full Jacobian is ``A = diag(f'(x[index])) S`` with ``S`` the selection matrix.
        """
        return apply_fn_derivative(self.fn, x.flatten(1)[:, self.index])

    def adjoint(self, v: Tensor, x: Tensor) -> Tensor:
        """``A^T v`` at ``x``: ``v`` is ``[B, M]``, result ``[B, *S]``."""
        out = torch.zeros_like(x).flatten(1)
        out[:, self.index] = v * self.derivative(x)
        return out.reshape(x.shape)

    def to(self, device: torch.device | str) -> "ObservationOperator":
        return ObservationOperator(self.index.to(device), self.fn)


@dataclass(frozen=True)
class Observation:
    """One cycle's observations with NaNs removed: ``y``, ``variance`` ``[M]`` and ``H``."""

    y: Tensor
    variance: Tensor
    operator: ObservationOperator

    @property
    def size(self) -> int:
        return int(self.y.numel())

    def to(self, device: torch.device | str) -> "Observation":
        """The same observation with ``y``, ``variance`` and ``H``'s index on ``device`` (dtype kept)."""
        return Observation(self.y.to(device), self.variance.to(device), self.operator.to(device))

    @staticmethod
    def from_field(y_field: Tensor, variance: float | Tensor, fn: str = "identity") -> "Observation":
        """From ``y`` in the state layout ``S`` (NaN = not observed) and a variance (scalar or ``S``)."""
        flat = y_field.flatten()
        index = torch.nonzero(~torch.isnan(flat)).flatten()
        var = torch.as_tensor(variance, dtype=flat.dtype, device=flat.device)
        var = var.expand_as(y_field).flatten()[index] if var.ndim else var.expand(index.numel())
        return Observation(flat[index], var.clone(), ObservationOperator(index, fn))

    def log_likelihood(self, hx: Tensor, extra_variance: Tensor | None = None) -> Tensor:
        """``log N(y | hx, diag(variance + extra))`` for ``hx`` ``[B, M]``: ``[B]`` in float64."""
        var = self.variance.double()
        if extra_variance is not None:
            var = var + extra_variance.double()
        r = self.y.double() - hx.double()
        return -0.5 * ((r**2 / var) + torch.log(2 * torch.pi * var)).sum(-1)

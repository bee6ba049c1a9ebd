r"""Per-channel normalisation of gridded states, stored with a checkpoint.

    z = (x - mean) / std,            x = mean + std * z,        mean, std: [C]

``residual_std`` ``[C]`` is the standard deviation of one-step increments in normalised units,
``std(z^{k+1} - z^k)``; the neural denoiser uses it as EDM's ``sigma_data`` when it predicts the
increment (GenCast's residual target). Shapes: fields are ``[..., C, H, W]`` (channel axis third
from the end), so the same object serves a state, a batch and a trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    residual_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std {len(self.std)}")
        if any(not s > 0 for s in self.std):
            raise ValueError("every std must be > 0 (a constant channel cannot be normalised)")
        if self.residual_std is not None:
            if len(self.residual_std) != len(self.mean):
                raise ValueError("residual_std must have one value per channel")
            if any(not s > 0 for s in self.residual_std):
                raise ValueError("every residual_std must be > 0")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _stat(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None, None]

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` on ``[..., C, H, W]``."""
        return (x - self._stat(self.mean, x)) / self._stat(self.std, x)

    def denormalise(self, z: Tensor) -> Tensor:
        """``mean + std * z`` on ``[..., C, H, W]``."""
        return self._stat(self.mean, z) + self._stat(self.std, z) * z

    def scale(self, z: Tensor) -> Tensor:
        """``std * z``: a spread or an increment back to physical units (no offset)."""
        return self._stat(self.std, z) * z

    def sigma_data(self, like: Tensor) -> Tensor:
        """``[C, 1, 1]``: ``residual_std`` if set, else ones (normalised data has unit variance)."""
        values = self.residual_std if self.residual_std is not None else (1.0,) * self.channels
        return self._stat(values, like)

    @classmethod
    def from_trajectory(cls, x: Tensor, residual: bool = True) -> "Normalisation":
        """Statistics of a physical trajectory ``[T, C, H, W]`` (float64 accumulation)."""
        x = x.double()
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-12)
        res = None
        if residual:
            z = (x - mean[:, None, None]) / std[:, None, None]
            res = tuple(float(v) for v in (z[1:] - z[:-1]).std(dim=(0, 2, 3)).clamp_min(1e-6))
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std), res)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std),
                "residual_std": None if self.residual_std is None else list(self.residual_std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        res = d.get("residual_std")
        return cls(tuple(d["mean"]), tuple(d["std"]), None if res is None else tuple(res))

r"""The neural conditional denoiser: EDM preconditioning around :class:`SphereUNet`.

State space. The diffusion runs on the **normalised** state ``z = (x - mean) / std`` (per channel,
:class:`Normalisation`, stored in the checkpoint). It has to: the noise ``sigma_t eps`` of the
protocol is the same for every channel, and in physical units it would drown a temperature of
a few kelvin while leaving a geopotential of 1e5 m²/s² untouched. So ``x_t``, the condition and
the result of ``__call__`` are normalised fields; a problem that observes physical quantities
composes its observation operator with :meth:`NeuralDenoiser.to_physical` (linear, so guidance
differentiates through it) and writes ``to_physical(mean)`` and ``normalisation.scale(spread)``.

Schedules. With ``x_t = alpha_t z + sigma_t eps`` (any schedule of :mod:`..diffusion.schedules`),
``x_t / alpha_t = z + sigma eps`` with ``sigma = sigma_t / alpha_t`` is EDM's variable, so

    d(x_t, t; c) = D(x_t / alpha_t, sigma_t / alpha_t; c).

Preconditioning (Karras et al. 2022) on the increment ``y = z - b`` over the base ``b`` (the
last condition state when ``residual``, GenCast-style; zero otherwise), with per-channel
``s = sigma_data`` (``Normalisation.residual_std``, or 1):

    c_skip = s² / (sigma² + s²),   c_out = sigma s / sqrt(sigma² + s²),
    c_in   = 1 / sqrt(sigma² + s²), c_noise = log(clamp(sigma, sigma_min, sigma_max)) / 4,
    D(z_sigma, sigma; c) = b + c_skip (z_sigma - b) + c_out F(c_in (z_sigma - b), c, c_noise).

With ``F = 0`` (the zero-initialised output layer) ``D`` is the exact posterior mean of the
Gaussian prior ``N(b, s²)``; training teaches ``F`` the rest. ``c_noise`` is clamped to the range
seen in training so that ``t = 1`` of a VP schedule (sigma ~ 1e3) reads the forecast mean
``E[z^{k+1} | c]`` instead of extrapolating the embedding.

Shapes: ``x_t`` ``[B, C, H, W]``, ``t`` scalar or ``[B]``, ``condition`` ``[B, K, C, H, W]``
(``[B, C, H, W]`` accepted when ``K = 1``). Differentiable in ``x_t``.

GPU efficiency options: ``dtype=torch.bfloat16`` runs the network under autocast (the
preconditioning stays in the state's dtype); ``compile=True`` wraps it in ``torch.compile``;
``cuda_graphs=True`` captures one CUDA graph per input shape for calls made without autograd
(the t = 1 forecast calls and unguided sampling; guided calls need the graph for their
vector-Jacobian products and run eagerly) and replays it, removing the per-kernel launch cost
that dominates small micro-batches. ``NET_TIMER`` measures the time spent inside the network,
forward and backward (the VJPs of guidance), when enabled (``diffda bench cycle``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..diffusion.denoiser import expand_time
from ..diffusion.schedules import Schedule, make_schedule
from .normalisation import Normalisation
from .unet import UNetConfig

if TYPE_CHECKING:
    from .network_checkpoint import GridLayout


@dataclass
class NetTimer:
    """Wall time inside the network: forward calls and backward passes (VJPs), CUDA-synchronised.

    Off by default (``enabled = False``): the hooks synchronise the device. Networks built while
    it is enabled carry the hooks; :meth:`reset` zeroes the counters.
    """

    enabled: bool = False
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0
    forward_calls: int = 0
    backward_calls: int = 0
    items: int = 0

    @property
    def seconds(self) -> float:
        return self.forward_seconds + self.backward_seconds

    def reset(self) -> None:
        self.forward_seconds = self.backward_seconds = 0.0
        self.forward_calls = self.backward_calls = self.items = 0

    def attach(self, net: nn.Module) -> None:
        """Register forward and full-backward hooks on ``net`` that add to this timer."""
        state: dict[str, float] = {}

        def sync(t: Tensor | None) -> None:
            if t is not None and t.is_cuda and not torch.cuda.is_current_stream_capturing():
                torch.cuda.synchronize(t.device)

        def fwd_pre(_m, args):
            sync(args[0])
            state["f"] = time.perf_counter()

        def fwd(_m, args, out):
            sync(out)
            self.forward_seconds += time.perf_counter() - state.pop("f", time.perf_counter())
            self.forward_calls += 1
            self.items += int(args[0].shape[0])

        def bwd_pre(_m, grad_out):
            sync(grad_out[0])
            state["b"] = time.perf_counter()

        def bwd(_m, grad_in, _grad_out):
            g = next((x for x in grad_in if x is not None), None)
            sync(g)
            self.backward_seconds += time.perf_counter() - state.pop("b", time.perf_counter())
            self.backward_calls += 1

        net.register_forward_pre_hook(fwd_pre)
        net.register_forward_hook(fwd)
        net.register_full_backward_pre_hook(bwd_pre)
        net.register_full_backward_hook(bwd)


NET_TIMER = NetTimer()

#: process-wide defaults of :meth:`NeuralDenoiser.from_checkpoint` for arguments left as None
#: (``diffda bench cycle`` sets them; a config key can map onto them): autocast dtype, compile,
#: CUDA graphs.
INFERENCE: dict = {"dtype": None, "compile": False, "cuda_graphs": False}


class CudaGraphForward:
    """Replay a captured CUDA graph of ``net(x, cond, c_noise)`` per input shape when no autograd
    graph is needed; run ``net`` eagerly otherwise (CPU tensors, or grad enabled)."""

    def __init__(self, net: nn.Module, autocast_dtype: torch.dtype | None = None, warmup: int = 3):
        self.net, self.autocast_dtype, self.warmup = net, autocast_dtype, warmup
        self.graphs: dict[tuple, tuple] = {}

    def _ctx(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)

    def __call__(self, x: Tensor, cond: Tensor, c_noise: Tensor) -> Tensor:
        if not x.is_cuda or torch.is_grad_enabled():
            return self.net(x, cond, c_noise)
        key = (tuple(x.shape), tuple(cond.shape), x.dtype, x.device)
        entry = self.graphs.get(key)
        if entry is None:
            static = (x.clone(), cond.clone(), c_noise.clone())
            stream = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(stream), self._ctx():
                for _ in range(self.warmup):
                    self.net(*static)
            torch.cuda.current_stream(x.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), self._ctx():
                out = self.net(*static)
            entry = self.graphs[key] = (graph, static, out)
        graph, static, out = entry
        for dst, src in zip(static, (x, cond, c_noise)):
            dst.copy_(src)
        if NET_TIMER.enabled:  # replays bypass the module hooks: time them here
            torch.cuda.synchronize(x.device)
            start = time.perf_counter()
            graph.replay()
            torch.cuda.synchronize(x.device)
            NET_TIMER.forward_seconds += time.perf_counter() - start
            NET_TIMER.forward_calls += 1
            NET_TIMER.items += int(x.shape[0])
        else:
            graph.replay()
        return out.clone()


class NeuralDenoiser:
    """``E[z | x_t, c]`` from a trained :class:`SphereUNet`; implements the Denoiser protocol."""

    def __init__(self, net: nn.Module, schedule: Schedule, normalisation: Normalisation, *,
                 residual: bool = True, sigma_min: float = 1e-3, sigma_max: float = 100.0,
                 dtype: torch.dtype | None = None, compile: bool = False, meta: dict | None = None,
                 cuda_graphs: bool = False):
        self.net = net
        self.schedule = schedule
        self.normalisation = normalisation
        self.residual = residual
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.autocast_dtype = dtype  # e.g. torch.bfloat16: run the network under autocast
        self.meta = meta or {}
        self.cuda_graphs = cuda_graphs
        if NET_TIMER.enabled:
            NET_TIMER.attach(net)
        forward = torch.compile(net) if compile else net
        self._forward = CudaGraphForward(forward, dtype) if cuda_graphs else forward

    @property
    def history(self) -> int:
        return int(getattr(self.net, "config", UNetConfig(channels=1)).history)

    # -- the protocol -------------------------------------------------------------------------
    def __call__(self, x_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        """``d(x_t, t; c) = D(x_t / alpha_t, sigma_t / alpha_t; c)``: ``[B, C, H, W]``."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        alpha, sigma_t = self.schedule(expand_time(t, x_t))
        sigma = (sigma_t / alpha).expand(x_t.shape[0], *([1] * (x_t.ndim - 1)))
        return self.edm(x_t / alpha, sigma.reshape(x_t.shape[0]), condition)

    # -- EDM form -----------------------------------------------------------------------------
    def variance(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Diagonal model of ``V[z | x_t, c]``: ``c_out^2 = s^2 sigma^2 / (s^2 + sigma^2)``, ``[B, C, 1, 1]``.

        The posterior variance under the Gaussian prior ``N(b, s^2)`` (``s`` the per-channel
        ``sigma_data``, the std of a 6-hour increment) that the preconditioning is built on, with
        ``sigma = sigma_t / alpha_t``; ``s^2`` at ``t = 1``, ``sigma^2`` as ``sigma -> 0``. Unlike the
        network's Jacobian it is a covariance whatever the training: MMPS's ``covariance="diagonal"``.
        """
        alpha, sigma_t = self.schedule(expand_time(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device), x_t))
        _, c_out, _, _ = self.coefficients((sigma_t / alpha).reshape(-1), x_t)
        return c_out**2

    def coefficients(self, sigma: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` ``[B, C, 1, 1]`` and ``c_noise`` ``[B]`` for ``sigma`` ``[B]``."""
        s = self.normalisation.sigma_data(like)[None]  # [1, C, 1, 1]
        sig = sigma.to(like.dtype).reshape(-1, 1, 1, 1)
        var = sig**2 + s**2
        c_skip = s**2 / var
        c_out = sig * s / var.sqrt()
        c_in = 1 / var.sqrt()
        c_noise = sigma.to(like.dtype).clamp(self.sigma_min, self.sigma_max).log() / 4
        return c_skip, c_out, c_in, c_noise

    def edm(self, z_sigma: Tensor, sigma: Tensor, condition: Tensor) -> Tensor:
        """``D(z + sigma eps, sigma; c)`` with ``z_sigma`` ``[B, C, H, W]``, ``sigma`` ``[B]``."""
        if condition.ndim == z_sigma.ndim:
            condition = condition[:, None]
        if condition.shape[0] != z_sigma.shape[0] and condition.shape[0] == 1:
            condition = condition.expand(z_sigma.shape[0], *condition.shape[1:])
        base = condition[:, -1] if self.residual else torch.zeros_like(z_sigma)
        y = z_sigma - base
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.expand(z_sigma.shape[0]), z_sigma)
        f = self._network(c_in * y, condition, c_noise)
        return base + c_skip * y + c_out * f

    def _network(self, x: Tensor, condition: Tensor, c_noise: Tensor) -> Tensor:
        p = next(self.net.parameters())
        device_type = p.device.type
        use_autocast = self.autocast_dtype is not None and not (self.cuda_graphs and not torch.is_grad_enabled()
                                                                and device_type == "cuda")
        ctx = (torch.autocast(device_type, dtype=self.autocast_dtype) if use_autocast
               else contextlib.nullcontext())  # CudaGraphForward applies autocast inside its capture
        with ctx:
            out = self._forward(x.to(p.dtype), condition.to(p.dtype), c_noise.to(p.dtype))
        return out.to(x.dtype)

    # -- units --------------------------------------------------------------------------------
    def to_physical(self, z: Tensor) -> Tensor:
        """``mean + std z`` on ``[..., C, H, W]``."""
        return self.normalisation.denormalise(z)

    def from_physical(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` on ``[..., C, H, W]``."""
        return self.normalisation.normalise(x)

    # -- construction -------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "NeuralDenoiser":
        self.net.to(device)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, schedule: Schedule | None = None, *,
                        device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                        compile: bool | None = None, layout: "GridLayout | None" = None,
                        cuda_graphs: bool | None = None) -> "NeuralDenoiser":
        """Load ``path`` (a checkpoint directory); ``schedule`` defaults to the stored one.

        With ``layout`` (the inputs' channels and grid), refuse a checkpoint that does not fit
        them (:func:`~.checkpoint.check_compatible`, an ``InputError`` naming the difference).
        """
        from .network_checkpoint import check_compatible, load_checkpoint, read_meta

        dtype = INFERENCE["dtype"] if dtype is None else dtype
        compile = bool(INFERENCE["compile"]) if compile is None else compile
        cuda_graphs = bool(INFERENCE["cuda_graphs"]) if cuda_graphs is None else cuda_graphs
        meta = read_meta(path, kind="sphere-unet")
        if layout is not None:
            check_compatible(meta, layout)
        net, meta = load_checkpoint(path, device=device)
        if schedule is None:
            sched = meta.get("schedule") or {"kind": "edm", "params": {}}
            schedule = make_schedule(sched["kind"], **sched.get("params", {}))
        pre = meta.get("preconditioning", {})
        return cls(net, schedule, Normalisation.from_dict(meta["normalisation"]),
                   residual=bool(pre.get("residual", True)), sigma_min=float(pre.get("sigma_min", 1e-3)),
                   sigma_max=float(pre.get("sigma_max", 100.0)), dtype=dtype, compile=compile, meta=meta, cuda_graphs=cuda_graphs)

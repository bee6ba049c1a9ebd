r"""Training of the neural denoisers (EDM loss): one loop, :func:`fit`, for every network kind.

A :class:`TrainTask` supplies the network, the loss of one batch and the checkpoint's metadata;
``kind=sphere-unet`` (:class:`EmulatorTask`, below) is the gridded emulator, ``kind=window-mlp`` and
``kind=window-conv`` (:class:`pipeline.smoothers.train_window.WindowTask`) the smoother's window prior on a
twin trajectory (an MLP over the stacked window; a convolution over a ring's components), ``kind=window-unet``
(the same task) its window prior on a gridded store (the U-Net over the stacked window).
The rest of this docstring describes the emulator's samples and options; determinism, resumption and
data parallelism hold for both.

Samples. From trajectories ``z`` ``[T, C, H, W]`` (normalised), sample ``i`` is the condition
``z[i-K+1 .. i]`` ``[K, C, H, W]`` and the target ``z[i+1]`` ``[C, H, W]``.

Loss (Karras et al. 2022). ``ln sigma ~ N(P_mean, P_std²)`` (a fraction ``uniform_fraction``
drawn log-uniformly in ``[sigma_min, sigma_max]`` instead, so that the large noise levels the
filter's ``t = 1`` forecast call uses are trained too), ``eps ~ N(0, I)``,

    L = E[ lambda(sigma) |D(z + sigma eps, sigma; c) - z|² ],   lambda = 1 / c_out² = (sigma² + s²) / (sigma s)²,

per channel with ``s = sigma_data`` (see :mod:`.neural`); i.e. unit-weighted on ``F``'s target.

Robustness to imperfect conditions (what cycling needs: a filter feeds the emulator analyses, not
true states). Two levers, both off by default:

- *condition noise* (``cond_noise = c``): each sample's condition states get ``sigma_c n``, with
  ``sigma_c ~ U(0, c)`` per sample (a fraction ``cond_noise_clean`` keeps ``sigma_c = 0``) and ``n`` a
  unit-variance field that is half white, half smooth (white noise on a grid 4× coarser,
  interpolated bilinearly, periodic in longitude): analysis errors are mostly large-scale. The
  target stays the true next state, so the network learns to pull a perturbed state back;
- *pushforward* (``rollout_fraction = f``, Brandstetter et al. 2022): for a fraction ``f`` of the
  samples the newest condition state is replaced by the network's own sample of it (a
  ``rollout_steps``-step Heun sample from the states before, no gradient), so training sees the
  inputs a rollout produces. Costs about ``2 rollout_steps - 1`` extra forward passes per such sample.

``init = DIR`` starts from the weights (EMA) of an earlier checkpoint with the same architecture
(a fine-tuning stage with its own step count and schedule).

Determinism and resumption. Every random draw of step ``k`` on rank ``r`` comes from its own
counter-based generator ``rng.generator(seed, k, r, "train")`` (batch indices, sigmas, noise), the
initial weights from a fork of the global RNG seeded with ``seed``, so the whole state is
(weights, EMA, optimiser, step): it is saved every ``checkpoint_every`` steps
(``training.pt``, atomic) and a resumed run reaches bit for bit the parameters of an
uninterrupted one (on CPU; cuDNN kernels may not be deterministic). The learning rate is a
function of the step (linear warm-up, cosine decay to 10 %).

Data parallel. When ``torch.distributed.is_initialized()``, the network is wrapped in DDP
(NCCL on GPU, gloo on CPU: whatever group exists), each rank draws its own batch (``r`` in the
generator key), gradients are averaged, and rank 0 writes the checkpoints.

The library does not print: ``progress(step, total, info)`` is called after every step on rank 0
with ``info = {"loss", "lr", "seconds"}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import rng
from ..data.atomic import write_file
from ..errors import DiffdaError
from .network_checkpoint import GRID_WINDOW_KINDS, WINDOW_KINDS, GridLayout, make_meta, network_of, save_checkpoint
from .neural import NeuralDenoiser
from .normalisation import Normalisation
from .unet import UNetConfig
from .window_conv import WindowConvConfig
from .window_mlp import WindowMLPConfig
from .window_unet import WindowUNetConfig

Progress = Callable[[int, int, dict[str, float]], None]
TRAIN_STATE = "training.pt"
KINDS = ("sphere-unet", *WINDOW_KINDS, *GRID_WINDOW_KINDS)


@dataclass
class TrainOptions:
    """Hyper-parameters of :func:`fit` (``diffda train --set key=value``)."""

    kind: str = "sphere-unet"  # sphere-unet (gridded emulator) | window-mlp | window-conv | window-unet (the smoother's window prior)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    # architecture
    base: int = 32
    mults: tuple[int, ...] = (1, 2, 2)
    blocks: int = 1
    emb: int = 64
    pole: str = "roll"
    history: int = 2
    window_half_width: int = 2  # window-mlp, window-conv, window-unet: k, windows of 2k+1 states
    hidden: int = 256  # window-mlp: units per layer; window-conv: channels
    depth: int = 3  # window-mlp, window-conv: residual blocks
    kernel: int = 5  # window-conv: taps per ring convolution (odd)
    # diffusion
    residual: bool = True
    p_mean: float = -1.2
    p_std: float = 1.2
    uniform_fraction: float = 0.1
    sigma_min: float = 1e-3
    sigma_max: float = 100.0
    # robustness to imperfect conditions (see the module docstring)
    cond_noise: float = 0.0
    cond_noise_clean: float = 0.2
    rollout_fraction: float = 0.0
    rollout_steps: int = 4
    init: str | None = None
    # run
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = True
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "off"
    compile: bool = False
    device: str = "auto"
    threads: int = 0  # torch.set_num_threads on CPU; 0 = leave as is
    # data (train_from_store)
    val_fraction: float = 0.1
    variables: list[str] | None = None
    levels: list[float] | None = None

    def __post_init__(self) -> None:
        self.mults = tuple(int(m) for m in self.mults)
        checks = [
            (self.steps >= 1, "steps must be >= 1"), (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"), (self.history >= 1, "history (K) must be >= 1"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (0 <= self.uniform_fraction <= 1, "uniform_fraction must be in [0, 1]"),
            (0 < self.sigma_min < self.sigma_max, "need 0 < sigma_min < sigma_max"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.cond_noise >= 0, "cond_noise must be >= 0"),
            (0 <= self.cond_noise_clean <= 1, "cond_noise_clean must be in [0, 1]"),
            (0 <= self.rollout_fraction <= 1, "rollout_fraction must be in [0, 1]"),
            (self.rollout_steps >= 1, "rollout_steps must be >= 1"),
            (self.amp in ("auto", "bf16", "off"), "amp must be auto, bf16 or off"),
            (self.pole in ("roll", "reflect", "zero"), "pole must be roll, reflect or zero"),
            (self.base >= 4 and len(self.mults) >= 1, "base must be >= 4 and mults non-empty"),
            (self.kind in KINDS, f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})"),
            (self.window_half_width >= 0, "window_half_width (k) must be >= 0"),
            (self.hidden >= 1 and self.depth >= 1, "hidden and depth must be >= 1"),
            (self.kernel >= 1 and self.kernel % 2 == 1, f"kernel must be odd and >= 1 (got {self.kernel})"),
            (self.kind == "sphere-unet" or (self.cond_noise == 0 and self.rollout_fraction == 0),
             f"cond_noise and rollout_fraction train a conditional emulator; kind={self.kind} has no condition"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DiffdaError(f"train option: {msg}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DiffdaError(f"unknown train option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        d = dict(d)
        for f in fields(cls):  # YAML reads "6e-4" (no dot) as a string: coerce numbers given as text
            if f.name in d and isinstance(d[f.name], str) and f.type in ("float", float):
                try:
                    d[f.name] = float(d[f.name])
                except ValueError:
                    raise DiffdaError(f"train option {f.name} must be a number (got {d[f.name]!r})") from None
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mults"] = list(self.mults)
        return d

    def network_config(self, channels: int) -> UNetConfig:
        return UNetConfig(channels=channels, history=self.history, base=self.base, mults=self.mults,
                          blocks=self.blocks, emb=self.emb, pole=self.pole)  # type: ignore[arg-type]


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    net: nn.Module | None = None  # the trained network (raw weights, not the EMA)
    ema: dict[str, Tensor] | None = None


def pick_device(name: str) -> torch.device:
    """``auto``/``cuda`` -> the current CUDA device (the launcher sets it to the rank's local GPU), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def init_network(config: UNetConfig | WindowMLPConfig | WindowConvConfig | WindowUNetConfig, seed: int) -> nn.Module:
    """The network of ``config`` (:func:`.network_checkpoint.network_of`) initialised from ``seed`` (the
    global RNG is forked, then restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return network_of(config)


class SampleIndex:
    """All (trajectory, time) pairs with K previous states and a next state."""

    def __init__(self, trajectories: Sequence[Tensor], history: int):
        self.trajectories = list(trajectories)
        self.history = history
        self.pairs = [(j, i) for j, z in enumerate(self.trajectories) for i in range(history - 1, z.shape[0] - 1)]
        if not self.pairs:
            raise DiffdaError(f"no training samples: trajectories need at least history + 1 = {history + 1} time steps")

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(condition [B, K, C, H, W], target [B, C, H, W])`` for sample numbers ``rows``."""
        conds, targets = [], []
        for r in rows.tolist():
            j, i = self.pairs[r]
            z = self.trajectories[j]
            conds.append(z[i - self.history + 1: i + 1])
            targets.append(z[i + 1])
        return torch.stack(conds), torch.stack(targets)

    def earlier(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(condition of the newest condition state [B, K, C, H, W], valid [B])``: the K states
        before ``z[i]`` for each sample (``valid`` False where the trajectory starts too late)."""
        conds, valid = [], []
        for r in rows.tolist():
            j, i = self.pairs[r]
            z = self.trajectories[j]
            ok = i - self.history >= 0
            valid.append(ok)
            conds.append(z[i - self.history: i] if ok else z[i - self.history + 1: i + 1])
        return torch.stack(conds), torch.tensor(valid)


def smooth_noise(shape: tuple[int, ...], g: torch.Generator, factor: int = 4) -> Tensor:
    """Unit-variance noise ``shape = [..., H, W]``, half white, half smooth (white on a grid
    ``factor`` times coarser, bilinearly interpolated, periodic in longitude)."""
    *lead, h, w = shape
    white = torch.randn(shape, generator=g)
    hc, wc = max(1, h // factor), max(1, w // factor)
    coarse = torch.randn((int(torch.tensor(lead).prod()) if lead else 1, 1, hc, wc + 2), generator=g)
    coarse[..., -2:] = coarse[..., :2]  # periodic in longitude
    fine = torch.nn.functional.interpolate(coarse, size=(h, w + 2 * factor), mode="bilinear", align_corners=False)
    fine = fine[..., :w].reshape(shape)
    fine = fine / fine.std().clamp_min(1e-6)
    return (white + fine) / math.sqrt(2.0)


def perturb_conditions(cond: Tensor, opts: "TrainOptions", g: torch.Generator) -> Tensor:
    """``cond + sigma_c n`` with ``sigma_c ~ U(0, cond_noise)`` per sample (0 for a fraction
    ``cond_noise_clean``), ``n`` from :func:`smooth_noise`: ``[B, K, C, H, W]``."""
    if opts.cond_noise <= 0:
        return cond
    b = cond.shape[0]
    level = opts.cond_noise * torch.rand(b, generator=g)
    level = torch.where(torch.rand(b, generator=g) < opts.cond_noise_clean, torch.zeros_like(level), level)
    n = smooth_noise(tuple(cond.shape), g).to(cond)
    return cond + level.to(cond).reshape(b, 1, 1, 1, 1) * n


def sample_sigma(n: int, opts: TrainOptions, g: torch.Generator) -> Tensor:
    """``[n]`` noise levels: log-normal, a fraction log-uniform in ``[sigma_min, sigma_max]``."""
    normal = torch.randn(n, generator=g)
    uniform = torch.rand(n, generator=g)
    pick = torch.rand(n, generator=g) < opts.uniform_fraction
    log_lo, log_hi = math.log(opts.sigma_min), math.log(opts.sigma_max)
    log_sigma = torch.where(pick, log_lo + (log_hi - log_lo) * uniform, opts.p_mean + opts.p_std * normal)
    return log_sigma.exp()


def learning_rate(step: int, opts: TrainOptions) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % at ``steps``."""
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    frac = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    return opts.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def edm_loss(denoiser: NeuralDenoiser, cond: Tensor, target: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
    """``mean(lambda(sigma) (D(z + sigma eps, sigma; c) - z)²)``, ``lambda = 1 / c_out²``."""
    z_sigma = target + sigma.reshape(-1, *[1] * (target.ndim - 1)) * eps
    d = denoiser.edm(z_sigma, sigma, cond)
    _, c_out, _, _ = denoiser.coefficients(sigma, target)
    return ((d - target) ** 2 / c_out**2).mean()


def _pushforward(denoiser: NeuralDenoiser, samples: SampleIndex, rows: Tensor, cond: Tensor,
                 opts: TrainOptions, g: torch.Generator) -> Tensor:
    """Replace the newest condition state of a fraction ``rollout_fraction`` of the samples by the
    network's own sample of it: the filter's sampler (VP-cosine, probability-flow, ``rollout_steps``
    steps; robust at few steps, unlike EDM's Heun), no gradient."""
    from ..diffusion.sampler import Sampler
    from ..diffusion.schedules import make_schedule

    pick = torch.rand(len(rows), generator=g) < opts.rollout_fraction
    earlier, valid = samples.earlier(rows)
    pick = pick & valid
    noise = torch.randn(cond[:, -1].shape, generator=g)
    if not bool(pick.any()):
        return cond
    idx = torch.nonzero(pick).flatten()
    view = NeuralDenoiser(denoiser.net, make_schedule("vp-cosine"), denoiser.normalisation,
                          residual=denoiser.residual, sigma_min=denoiser.sigma_min, sigma_max=denoiser.sigma_max,
                          dtype=denoiser.autocast_dtype)
    was_training = denoiser.net.training
    denoiser.net.eval()
    with torch.no_grad():
        z = noise[idx].to(cond)
        own = Sampler(view, steps=opts.rollout_steps).sample(earlier[idx].to(cond.device), lambda: z, tuple(z.shape[1:]))
    denoiser.net.train(was_training)
    cond = cond.clone()
    cond[idx, -1] = own.to(cond.dtype)
    return cond


def _autocast_dtype(opts: TrainOptions, device: torch.device) -> torch.dtype | None:
    if opts.amp == "bf16" or (opts.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TrainTask(Protocol):
    """What :func:`fit` trains: a network kind, its batches and loss, its checkpoint metadata."""

    kind: str  # architecture.kind of the checkpoint
    architecture: dict  # checked when resuming (training.pt) and fine-tuning (init)

    def network(self, seed: int) -> nn.Module:
        """A fresh network initialised from ``seed``."""
        ...

    def bind(self, model: nn.Module, device: torch.device) -> None:
        """Prepare the loss around ``model`` (the network, DDP-wrapped under several ranks)."""
        ...

    def loss(self, g: torch.Generator, device: torch.device) -> Tensor:
        """The loss of one batch, every random draw from ``g``."""
        ...

    def meta(self, step: int, training: dict) -> dict:
        """``meta.json`` of the checkpoint at ``step``."""
        ...


class EmulatorTask:
    """The gridded emulator (``kind=sphere-unet``): :class:`SphereUNet` on ``[T, C, H, W]`` trajectories."""

    kind = "sphere-unet"

    def __init__(self, trajectories: Sequence[Tensor] | Tensor, layout: GridLayout, normalisation: Normalisation,
                 opts: TrainOptions):
        self.trajs = [trajectories] if isinstance(trajectories, Tensor) else list(trajectories)
        if any(z.shape[1:] != self.trajs[0].shape[1:] for z in self.trajs):
            raise DiffdaError("all trajectories must share [C, H, W]")
        self.layout, self.normalisation, self.opts = layout, normalisation, opts
        self.config = opts.network_config(self.trajs[0].shape[1])
        self.architecture = self.config.to_dict()

    def network(self, seed: int) -> nn.Module:
        return init_network(self.config, seed)

    def bind(self, model: nn.Module, device: torch.device) -> None:
        opts = self.opts
        self.samples = SampleIndex([z.to(device=device, dtype=torch.float32) for z in self.trajs], opts.history)
        self.denoiser = NeuralDenoiser(model, None, self.normalisation, residual=opts.residual,  # type: ignore[arg-type]
                                       sigma_min=opts.sigma_min, sigma_max=opts.sigma_max,
                                       dtype=_autocast_dtype(opts, device), compile=opts.compile)

    def loss(self, g: torch.Generator, device: torch.device) -> Tensor:
        opts = self.opts
        rows = torch.randint(len(self.samples), (opts.batch_size,), generator=g)
        cond, target = self.samples.batch(rows)
        if opts.rollout_fraction > 0:
            cond = _pushforward(self.denoiser, self.samples, rows, cond, opts, g)
        cond = perturb_conditions(cond, opts, g)
        sigma = sample_sigma(opts.batch_size, opts, g).to(device)
        eps = torch.randn(target.shape, generator=g).to(device)
        return edm_loss(self.denoiser, cond, target, sigma, eps)

    def meta(self, step: int, training: dict) -> dict:
        opts = self.opts
        return make_meta(self.config, self.layout, self.normalisation, step=step, training=training,
                         residual=opts.residual, sigma_min=opts.sigma_min, sigma_max=opts.sigma_max)


def train(trajectories: Sequence[Tensor] | Tensor, layout: GridLayout, normalisation: Normalisation,
          out_dir: str | Path, options: TrainOptions | None = None, progress: Progress | None = None,
          stop_at: int | None = None) -> TrainResult:
    """Train the emulator on normalised ``[T, C, H, W]`` trajectories (:func:`fit` of an :class:`EmulatorTask`)."""
    opts = options or TrainOptions()
    return fit(EmulatorTask(trajectories, layout, normalisation, opts), out_dir, opts, progress, stop_at)


def fit(task: TrainTask, out_dir: str | Path, opts: TrainOptions, progress: Progress | None = None,
        stop_at: int | None = None) -> TrainResult:
    """The training loop of every network kind; writes checkpoints to ``out_dir``.

    Resumes from ``out_dir/training.pt`` when present and ``options.resume``. ``stop_at`` ends
    the run early at that step (after checkpointing it), as a preemption would: the learning-rate
    schedule still runs to ``options.steps``.
    """
    out = Path(out_dir)
    rank, world = _rank_world()
    device = pick_device(opts.device)
    if opts.threads and device.type == "cpu":
        torch.set_num_threads(opts.threads)
    net = task.network(opts.seed).to(device)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    optimiser = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    step = 0
    state_path = out / TRAIN_STATE
    if opts.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        saved = (state.get("kind", "sphere-unet"), state.get("architecture", task.architecture))
        if saved != (task.kind, task.architecture):
            raise DiffdaError(f"{state_path} was trained with a {saved[0]} of architecture {saved[1]}, not a "
                              f"{task.kind} of {task.architecture}; use another --out or --set resume=false to start afresh")
        net.load_state_dict(state["model"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        optimiser.load_state_dict(state["optimizer"])
        step = int(state["step"])
    elif opts.init:
        from .network_checkpoint import load_checkpoint

        start_net, start_meta = load_checkpoint(opts.init, device=device)
        arch = dict(start_meta["architecture"])
        if arch.pop("kind", "sphere-unet") != task.kind or arch != task.architecture:
            raise DiffdaError(f"init={opts.init} has architecture {start_meta['architecture']}, not "
                              f"{task.architecture} ({task.kind}); set the same architecture options")
        net.load_state_dict(start_net.state_dict())
        ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    model: nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    task.bind(model, device)
    result = TrainResult(step=step)
    end = opts.steps if stop_at is None else min(stop_at, opts.steps)
    start = time.perf_counter()
    net.train()
    while step < end:
        tic = time.perf_counter()
        g = rng.generator(opts.seed, step, rank, "train")
        lr = learning_rate(step, opts)
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = task.loss(g, device)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), opts.grad_clip)
        optimiser.step()
        step += 1
        decay = min(opts.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].lerp_(v, 1 - decay)
                else:
                    ema[k].copy_(v)
        value = float(loss.detach())
        result.losses.append(value)
        if progress is not None and rank == 0:
            progress(step, opts.steps, {"loss": value, "lr": lr, "seconds": time.perf_counter() - tic})
        if step % opts.checkpoint_every == 0 or step == end:
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                state = {"step": step, "model": net.state_dict(), "ema": ema, "optimizer": optimiser.state_dict(),
                         "kind": task.kind, "architecture": task.architecture, "options": opts.to_dict()}
                write_file(state_path, lambda p: torch.save(state, p))
                meta = task.meta(step, {"options": opts.to_dict(), "world_size": world})
                save_checkpoint(out, net, meta, state_dict=ema)
            if world > 1:
                dist.barrier()
    if world > 1:
        _check_ranks_agree(net, device)
    result.step, result.net, result.ema = step, net, ema
    result.seconds = time.perf_counter() - start
    return result


def _check_ranks_agree(net: torch.nn.Module, device: torch.device) -> None:
    """Raise unless every rank holds the same parameters (DDP averages gradients, so they must).

    Compares ``(sum p, sum p²)`` in float64 by an all-reduce of the maximum and of the minimum.
    """
    with torch.no_grad():
        flat = [p.detach().double().reshape(-1) for p in net.parameters()]
        sums = torch.stack([sum(f.sum() for f in flat), sum((f * f).sum() for f in flat)]).to(device)
    hi, lo = sums.clone(), sums.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    if not torch.equal(hi, lo):
        raise DiffdaError(f"data-parallel ranks ended with different parameters (checksums {lo.tolist()} .. "
                          f"{hi.tolist()}): a rank trained on its own; check that all ranks joined one process group")


def _refuse_twin(store_path: str | Path) -> None:
    """A twin store trains the smoother's window network only: say so, naming ``kind``."""
    import zarr

    from .store import resolve_store

    try:
        preset = zarr.open_group(str(resolve_store(store_path)), mode="r").attrs.get("preset")
    except (OSError, ValueError):  # not a Zarr group (zarr's errors are ValueErrors): the store reader reports it
        return
    if preset in ("linear", "lorenz63", "lorenz96"):
        raise DiffdaError(f"{store_path} holds a {preset} twin trajectory, not gridded fields: train the "
                          f"smoother's window network on it with --set kind=window-mlp or kind=window-conv "
                          f"(and window_half_width=k)")


def read_store(store_path: str | Path, variables: Sequence[str] | None = None,
               levels: Sequence[float] | None = None) -> tuple[Tensor, GridLayout]:
    """Physical ``[T, C, H, W]`` and layout: the data plane's ERA5 reader when present, else :mod:`.store`."""
    from .store import read_trajectory

    return read_trajectory(store_path, variables=variables, levels=levels)


def train_from_store(store_path: str | Path, out_dir: str | Path, options: TrainOptions | dict | None = None,
                     progress: Progress | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Read an ERA5-layout store, normalise, train (the first ``1 - val_fraction`` of the times),
    measure forecast skill on the rest, and return a summary (also in ``meta.json``)."""
    from .network_checkpoint import read_meta
    from .skill import forecast_skill

    opts = options if isinstance(options, TrainOptions) else TrainOptions.from_dict(dict(options or {}))
    if opts.kind in (*WINDOW_KINDS, *GRID_WINDOW_KINDS):
        from ..smoothers.train_window import train_window_from_store

        return train_window_from_store(store_path, out_dir, opts, progress=progress, stop_at=stop_at)
    _refuse_twin(store_path)
    data, layout = read_store(store_path, opts.variables, opts.levels)
    n_val = int(round(opts.val_fraction * data.shape[0]))
    train_part, val_part = data[: data.shape[0] - n_val], data[data.shape[0] - n_val:]
    norm = Normalisation.from_trajectory(train_part, residual=opts.residual)
    z = norm.normalise(train_part.double()).float()
    result = train(z, layout, norm, out_dir, opts, progress=progress, stop_at=stop_at)
    summary: dict[str, Any] = {"step": result.step, "seconds": result.seconds, "train_times": int(train_part.shape[0]),
                               "val_times": int(n_val),
                               "final_loss": (sum(result.losses[-50:]) / len(result.losses[-50:])) if result.losses else None}
    rank, _ = _rank_world()
    if rank == 0 and n_val > opts.history + 1:
        den = NeuralDenoiser.from_checkpoint(out_dir)
        climatology = z.mean(0)
        skill = forecast_skill(den, norm.normalise(val_part.double()).float(), climatology, layout)
        summary["skill"] = skill
        meta = read_meta(out_dir)
        meta["training"]["skill"] = skill
        from .network_checkpoint import FILE_MODE, META
        import json

        write_file(Path(out_dir) / META, lambda p: p.write_text(json.dumps(meta, indent=1)), FILE_MODE)
    return summary

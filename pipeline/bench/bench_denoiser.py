r"""``diffda bench denoiser`` and ``diffda bench cycle``: where the time of the neural filter goes.

**denoiser.** The neural denoiser alone, on random normalised states of the checkpoint's shape:
for each autocast dtype (``fp32``, ``bf16``) and micro-batch size ``B``, the wall time of one
call ``d(x_t, t; c)`` (no autograd) and its rate in *particle-steps per second* (``B`` / time);
and one MMPS-guided call (one forward with its graph plus ``cg_iterations + 1`` vector-Jacobian
products through the network, observing temperature on every 2nd grid point as the default run
does), the unit of work of a guided sampler step. ``bf16`` rows also give the RMS difference of
the outputs from ``fp32`` (normalised units), to be compared with the forecast RMSE.

**cycle.** Full assimilation cycles of the optimal-proposal particle filter through
:func:`pipeline.run.assimilate` on the sphere data with the neural checkpoint (``N`` particles,
weights from one ``t = 1`` call per particle, systematic resampling, MMPS-guided propagation).
The time inside the network, forward and backward, is measured by hooks on the network
(:data:`pipeline.models.neural.NET_TIMER`, CUDA-synchronised); the *denoiser fraction* is that
time over the cycle's wall time (the rest: the sampler's and the guidance's arithmetic, CG in
float64, weights, resampling, moments, input). The run's own ``denoiser_seconds`` diagnostic
counts forward calls only (the VJPs run outside the call), so it is reported beside it.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..evaluate.report import markdown_table

DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"CPU {model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s) (shared machine)")


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_observation(den, like: torch.Tensor, stride: int = 2, noise_std: float = 1.0):
    """Temperature (every level) on every ``stride``-th point, in normalised units, values from ``like``."""
    from ..diffusion.observation import Observation
    from ..models.network_checkpoint import GridLayout

    layout = GridLayout.from_meta(den.meta)
    C, H, W = like.shape[-3:]
    y = torch.full((C, H, W), float("nan"), dtype=like.dtype, device=like.device)
    var = torch.ones((C, H, W), dtype=like.dtype, device=like.device)
    std = den.normalisation.std
    for c, (v, _) in enumerate(layout.channels):
        if v == "temperature":
            y[c, ::stride, ::stride] = like[0, c, ::stride, ::stride]
            var[c] = (noise_std / std[c]) ** 2
    return Observation.from_field(y, var)


def _time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def run_denoiser_bench(checkpoint: Path, batches: Sequence[int], dtypes: Sequence[str], device: str = "auto",
                       compile: bool = False, cuda_graphs: bool = False, repeats: int = 3, warmup: int = 1,
                       guided_batch: int | None = 64, cg_iterations: int = 8, seed: int = 0,
                       log: Callable[[str], None] = lambda s: None) -> tuple[str, list[dict]]:
    """Markdown body and rows of the denoiser benchmark."""
    from ..diffusion.guidance.mmps import MMPS
    from ..models.neural import NeuralDenoiser

    dev = _pick_device(device)
    rows: list[dict] = []
    reference: dict[int, torch.Tensor] = {}
    for name in dtypes:
        if name not in DTYPES:
            raise ValueError(f"dtype {name!r}: choose from {', '.join(DTYPES)}")
        den = NeuralDenoiser.from_checkpoint(checkpoint, device=dev, dtype=DTYPES[name], compile=compile,
                                             cuda_graphs=cuda_graphs)
        C, H, W = len(den.meta["channels"]), len(den.meta["grid"]["latitude"]), len(den.meta["grid"]["longitude"])
        K = den.history
        g = torch.Generator().manual_seed(seed)
        for b in batches:
            x = torch.randn(b, C, H, W, generator=g).to(dev)
            cond = torch.randn(b, K, C, H, W, generator=g).to(dev)
            t = (0.02 + 0.96 * torch.rand(b, generator=g)).to(dev)
            with torch.no_grad():
                seconds = _time(lambda: den(x, t, cond), dev, repeats, warmup)
                out = den(x, t, cond).float().cpu()
            row = {"dtype": name, "batch": b, "kind": "forward", "seconds": seconds, "rate": b / seconds}
            if name == "fp32":
                reference[b] = out
            elif b in reference:
                row["rms_vs_fp32"] = float((out - reference[b]).pow(2).mean().sqrt())
            rows.append(row)
            log(f"{name} B={b}: {seconds * 1e3:.1f} ms/call, {b / seconds:.0f} particle-steps/s")
        if guided_batch:
            b = guided_batch
            x = torch.randn(b, C, H, W, generator=g).to(dev)
            cond = torch.randn(b, K, C, H, W, generator=g).to(dev)
            t = torch.full((b,), 0.5).to(dev)
            guided = MMPS(den, default_observation(den, cond[:, -1]), cg_iterations=cg_iterations)
            with torch.no_grad():
                seconds = _time(lambda: guided(x, t, cond), dev, max(1, repeats // 2), min(warmup, 1))
            rows.append({"dtype": name, "batch": b, "kind": f"mmps (cg={cg_iterations})", "seconds": seconds,
                         "rate": b / seconds})
            log(f"{name} B={b} MMPS cg={cg_iterations}: {seconds * 1e3:.0f} ms/call, {b / seconds:.1f} guided particle-steps/s")
    table = markdown_table(
        ["dtype", "call", "micro-batch", "ms / call", "particle-steps / s", "RMS vs fp32 (normalised)"],
        [[r["dtype"], r["kind"], str(r["batch"]), f"{r['seconds'] * 1e3:.1f}", f"{r['rate']:.1f}",
          f"{r['rms_vs_fp32']:.2e}" if "rms_vs_fp32" in r else "-"] for r in rows])
    n_params = sum(p.numel() for p in den.net.parameters())
    body = (f"Device: {device_description(dev)}. Checkpoint `{checkpoint}` ({n_params / 1e3:.0f}k parameters, "
            f"{C} channels on {W}x{H}, history {K}); torch.compile {'on' if compile else 'off'}, CUDA graphs "
            f"{'on' if cuda_graphs else 'off'}{' (CUDA only: no effect here)' if cuda_graphs and dev.type != 'cuda' else ''}; "
            f"{repeats} timed calls after {warmup} warm-up. A particle-step is one denoiser evaluation "
            f"for one particle; the MMPS row is one guided evaluation (forward + {cg_iterations + 1} VJPs).\n\n{table}\n")
    return body, rows


def run_cycle_bench(data_dir: Path, out_root: Path, checkpoint: Path, particles: int, steps: int, cycles: int,
                    dtypes: Sequence[str], overrides: Sequence[str] = (), compile: bool = False,
                    cuda_graphs: bool = False, log: Callable[[str], None] = lambda s: None) -> tuple[str, list[dict]]:
    """Markdown body and rows of the full-cycle benchmark (one ``assimilate`` per dtype)."""
    from ..config import load_config
    from ..models import neural
    from ..run import assimilate

    base = ["data.preset=sphere", "model=neural", f"model.checkpoint={checkpoint}", f"filter.particles={particles}",
            f"sampler.steps={steps}", f"run.cycles={cycles}", "filter.weights=seed", "run.dtype=float32",
            "filter.init_std=0.1", *overrides]
    rows: list[dict] = []
    saved = dict(neural.INFERENCE)
    dev = None
    try:
        for name in dtypes:
            neural.INFERENCE.update(dtype=DTYPES[name], compile=compile, cuda_graphs=cuda_graphs)
            neural.NET_TIMER.enabled = True
            neural.NET_TIMER.reset()
            cfg = load_config(overrides=list(base))
            dev = _pick_device(cfg.run.device)
            per_cycle: list[dict] = []
            last = {"net": 0.0, "fwd": 0, "bwd": 0, "items": 0}

            def progress(k, total, diag, per_cycle=per_cycle, last=last):
                t = neural.NET_TIMER
                per_cycle.append({"cycle": k, "seconds": diag["cycle_seconds"], "net": t.seconds - last["net"],
                                  "forward_calls": t.forward_calls - last["fwd"], "vjps": t.backward_calls - last["bwd"],
                                  "items": t.items - last["items"], "run_denoiser": diag["denoiser_seconds"],
                                  "ess": diag["ess"], "rmse": diag["rmse_analysis"]})
                last.update(net=t.seconds, fwd=t.forward_calls, bwd=t.backward_calls, items=t.items)
                c = per_cycle[-1]
                log(f"{name} cycle {k}: {c['seconds']:.1f} s, network {c['net']:.1f} s "
                    f"({c['net'] / c['seconds']:.1%}), {c['forward_calls']} forward calls, {c['vjps']} VJPs, "
                    f"ESS {c['ess']:.1f}, RMSE {c['rmse']:.3f}")

            out = out_root / name
            assimilate(cfg, data_dir, out, fresh=True, progress=progress)
            steady = per_cycle[1:] if len(per_cycle) > 1 else per_cycle  # the first cycle pays warm-up
            secs = sum(c["seconds"] for c in steady)
            net = sum(c["net"] for c in steady)
            items = sum(c["items"] for c in steady)
            rows.append({"dtype": name, "cycles": len(steady), "cycle_seconds": secs / len(steady),
                         "network_seconds": net / len(steady), "fraction": net / secs,
                         "run_denoiser_fraction": sum(c["run_denoiser"] for c in steady) / secs,
                         "particle_steps_per_s": items / secs,
                         "forward_calls": steady[-1]["forward_calls"], "vjps": steady[-1]["vjps"],
                         "first_cycle_seconds": per_cycle[0]["seconds"],
                         "ess": float(np.mean([c["ess"] for c in steady])),
                         "rmse": float(np.mean([c["rmse"] for c in steady]))})
    finally:
        neural.INFERENCE.clear()
        neural.INFERENCE.update(saved)
        neural.NET_TIMER.enabled = False
    table = markdown_table(
        ["dtype", "cycles timed", "s / cycle", "network s / cycle", "denoiser fraction (fwd + VJP)",
         "forward-only fraction (run diagnostic)", "particle-steps / s", "forward calls / VJPs per cycle",
         "first cycle s"],
        [[r["dtype"], str(r["cycles"]), f"{r['cycle_seconds']:.1f}", f"{r['network_seconds']:.1f}",
          f"{r['fraction']:.1%}", f"{r['run_denoiser_fraction']:.1%}", f"{r['particle_steps_per_s']:.0f}",
          f"{r['forward_calls']} / {r['vjps']}", f"{r['first_cycle_seconds']:.1f}"] for r in rows])
    body = (f"Device: {device_description(dev or torch.device('cpu'))}. Config: {', '.join(base)}; torch.compile "
            f"{'on' if compile else 'off'}, CUDA graphs {'on' if cuda_graphs else 'off'}. Cycles after the first "
            "are timed (the first pays one-off costs and is shown apart). A particle-step is one network "
            f"evaluation for one particle (forward; the VJPs are extra).\n\n{table}\n")
    return body, rows

"""``diffda train --data DIR --out DIR [--set key=value ...]``: train the neural denoiser.

``--data`` is an ERA5-layout Zarr store or a directory holding ``truth.zarr`` (as written by
``diffda make-data sphere``); with ``--set kind=window-mlp`` or ``kind=window-conv`` (and
``window_half_width=k``), a twin's directory (``diffda make-data lorenz63 --set cycles=N``): the smoother's window network
(:mod:`pipeline.smoothers.train_window`); with ``--set kind=window-unet``, the smoother's window network on a
gridded store (the U-Net over ``2k+1`` stacked states). Keys are those of :class:`pipeline.models.train.TrainOptions`
(steps, batch_size, lr, base, mults, history, seed, resume, checkpoint_every, ...). A rerun into
the same ``--out`` resumes from its last checkpoint unless ``--set resume=false``. Under
``mpiexec``, ``srun`` or ``torchrun`` with several ranks, the launcher
(:func:`pipeline.distributed.failure.run_ranked`) opens the process group (gloo on CPU, NCCL on
GPU) and training is data-parallel (DDP); rank 0 writes the checkpoint and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import apply_overrides
from ..data.atomic import write_file
from ..errors import DiffdaError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the neural denoiser (gridded emulator, or a twin's window network)",
                       description="Train the conditional diffusion denoiser (U-Net, EDM loss) on an "
                                   "ERA5-layout Zarr store, or with --set kind=window-mlp (or window-conv, on a ring) the smoother's window "
                                   "network on a twin trajectory (kind=window-unet: on a gridded store); writes OUT/model.safetensors, OUT/meta.json "
                                   "and OUT/training.pt (for resuming).")
    p.add_argument("--data", required=True, type=Path, help="Zarr store, or a directory with truth.zarr")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training option, e.g. --set steps=2000 --set batch_size=8 --set lr=3e-4 --set base=32")
    p.add_argument("--log-every", type=int, default=50, help="print a progress line every N steps")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..distributed.failure import run_ranked
    from ..models.train import TrainOptions

    values = apply_overrides({}, args.overrides)
    if any(isinstance(v, dict) for v in values.values()):
        raise DiffdaError("train keys are flat, e.g. --set steps=2000")
    opts = TrainOptions.from_dict(values)
    device = "cpu" if opts.device == "cpu" else "auto"
    return run_ranked(lambda ctx: body(ctx.rank, ctx.size, args, opts), device=device)


def body(rank: int, size: int, args: argparse.Namespace, opts) -> int:
    from ..models.train import train_from_store

    start = time.perf_counter()
    every = max(1, args.log_every)

    def progress(step: int, total: int, info: dict) -> None:
        if step % every == 0 or step == total:
            elapsed = time.perf_counter() - start
            print(f"step {step}/{total}  loss {info['loss']:.4f}  lr {info['lr']:.2e}  "
                  f"{info['seconds'] * 1e3:.0f} ms/step  {elapsed:.0f} s", file=sys.stderr, flush=True)

    summary = train_from_store(args.data, args.out, opts, progress=progress)
    if rank != 0:
        return 0
    ranks = f" on {size} data-parallel ranks (parameters identical on all)" if size > 1 else ""
    print(f"trained to step {summary['step']} in {summary['seconds']:.0f} s{ranks}; checkpoint in {args.out}")
    skill = summary.get("skill")
    if skill:
        print(f"held-out forecast RMSE (normalised): model {skill['rmse_model']:.3f}, persistence "
              f"{skill['rmse_persistence']:.3f}, climatology {skill['rmse_climatology']:.3f}")
    check = summary.get("denoising")
    if check:
        pairs = ", ".join(f"{s:g}: {a:.3f} / {b:.3f}" for s, a, b in
                          zip(check["sigma"], check["rmse_network"], check["rmse_independent"]))
        print(f"held-out window denoising RMSE, network / independent Gaussian prior, at sigma/s_bar {pairs}")
    summary["world_size"] = size
    write_file(args.out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    return 0

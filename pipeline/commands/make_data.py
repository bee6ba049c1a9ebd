"""``diffda make-data PRESET --out DIR [--set key=value ...]``: twin or sphere inputs as Zarr."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import apply_overrides
from ..errors import DiffdaError

PRESETS = ("linear", "lorenz96", "lorenz63", "sphere")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-data", help="write truth.zarr and observations.zarr for a preset",
                       description="Write DIR/truth.zarr and DIR/observations.zarr (NaN where unobserved).")
    p.add_argument("preset", choices=PRESETS)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. --set dim=12 --set cycles=50")
    p.set_defaults(func=main)


def make_data(preset: str, out: Path, params: dict) -> dict:
    """Make a preset's stores; returns the parameters used."""
    if preset == "sphere":
        from ..data.sphere import make_sphere

        return make_sphere(out, params) or params
    from ..data.twins import make_twin

    return make_twin(preset, out, params)


def main(args: argparse.Namespace) -> int:
    params = apply_overrides({}, args.overrides)
    if any("." in k for k in params):
        raise DiffdaError("make-data keys are flat, e.g. --set cycles=50")
    start = time.perf_counter()
    used = make_data(args.preset, args.out, params)
    print(f"wrote {args.out}/truth.zarr and {args.out}/observations.zarr in {time.perf_counter() - start:.1f} s")
    print("  " + ", ".join(f"{k}={v}" for k, v in (used or {}).items()))
    return 0

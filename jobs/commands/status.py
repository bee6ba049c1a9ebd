"""``diffda status DIR``: each window of a campaign (or a submitted run) and where it stands.

For every window: its state (pending, running, done, failed, not submitted), cycles done out of
its total, the job id, for a failed window its error and log path, for a running one an
estimated finish; then the campaign's totals and estimated finish. Exit status 0 when every
window is done, 1 when any failed, 3 while work is pending or running.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="state of a campaign's windows (or of a submitted run)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="campaign directory (campaign.json) or run directory (submission.json)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def _clock(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def collect(root: Path) -> tuple[list, dict]:
    from .. import campaign

    root = root.resolve()
    if (root / campaign.MANIFEST).exists():
        manifest = campaign.load_manifest(root)
    elif (root / "submission.json").exists():  # a single `diffda submit` run, shown as one window
        sub = json.loads((root / "submission.json").read_text())
        sub.setdefault("result", str(Path(sub["folder"]) / f"{sub['job_id']}_0_result.pkl"))
        manifest = {"mode": "single", "max_concurrent": 1, "windows": [{
            "index": 0, "name": root.name, "out": str(root), "cycles": _run_cycles(root),
            "submissions": [sub]}]}
    else:
        raise campaign.CampaignError(f"{root} holds neither campaign.json nor submission.json")
    return campaign.window_states(root, manifest), manifest


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _run_cycles(root: Path) -> int:
    try:
        import xarray as xr

        return int(xr.open_zarr(root / "analysis.zarr").sizes["time"])
    except Exception:  # noqa: BLE001
        return 0


def main(args: argparse.Namespace) -> int:
    from .. import campaign

    states, manifest = collect(args.dir)
    now = time.time()
    remaining = sum(s.cycles - s.cycles_done for s in states if s.state != "done")
    rate = campaign.seconds_per_cycle(args.dir, manifest) if manifest["mode"] != "single" else None
    etas = [s.eta for s in states if s.eta is not None]
    finish = None
    stuck = any(s.state in ("failed", "not submitted") for s in states)
    if remaining == 0:
        finish = max((_mtime(Path(w["out"]) / "metrics.json") for w in manifest["windows"]), default=now)
    elif stuck:
        finish = None  # not without `diffda campaign --resume`
    elif rate is not None:
        lanes = 1 if manifest["mode"] in ("chained", "single") else max(1, int(manifest["max_concurrent"]))
        finish = now + remaining * rate / min(lanes, max(1, sum(s.state != "done" for s in states)))
    elif etas and all(s.state in ("done", "running") for s in states):
        finish = max(etas)
    if args.json:
        print(json.dumps({"windows": [s.__dict__ for s in states], "estimated_finish": finish}, indent=2))
    else:
        print(f"{'window':<8} {'state':<14} {'cycles':>9}  {'job':<12} {'finish (est.)':<19}  detail")
        for s in states:
            detail = s.detail
            if s.state == "failed":
                detail = (detail + "; " if detail else "") + f"log: {s.log}"
            print(f"{s.name:<8} {s.state:<14} {s.cycles_done:>4}/{s.cycles:<4}  {s.job_id or '-':<12} "
                  f"{_clock(s.eta) if s.state == 'running' else '-':<19}  {detail}")
        counts = {k: sum(s.state == k for s in states) for k in ("done", "running", "pending", "failed", "not submitted")}
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        when = ("finished " + _clock(finish)) if remaining == 0 else (
            "estimated finish " + (_clock(finish) if finish else "unknown") if not stuck else
            (f"to finish: diffda campaign --resume {args.dir}" if manifest["mode"] != "single"
             else "to finish: submit the same run again (it resumes)"))
        print(f"{len(states)} window(s): {summary}; {sum(s.cycles_done for s in states)}/"
              f"{sum(s.cycles for s in states)} cycles; {when}")
    if all(s.state == "done" for s in states):
        return 0
    if any(s.state in ("failed", "not submitted") for s in states) and not any(
            s.state in ("pending", "running") for s in states):
        return 1
    return 3


def wait_campaign(root: Path, poll_s: float = 3.0) -> int:
    """Block while any window is pending or running; 0 when all are done, else 1."""
    last = None
    while True:
        states, _ = collect(root)
        summary = [(s.name, s.state) for s in states]
        if summary != last:
            print("  ".join(f"{n}:{st}" for n, st in summary), flush=True)
            last = summary
        if not any(s.state in ("pending", "running") for s in states):
            return 0 if all(s.state == "done" for s in states) else 1
        time.sleep(poll_s)

r"""Campaigns: a period split into windows, each a job, tracked by a manifest.

The manifest's ``kind`` says what a window's job is (:data:`jobs.submission.KINDS`): ``run``, an
assimilation (:class:`jobs.assimilate.Assimilate`, the default), or ``smooth``, a smoothing window
(:class:`jobs.smooth.Smooth`: the trajectory posterior given the window's observations; always
independent, no spin-up, and a window already complete is skipped by the job itself).

``plan_windows`` maps ``[start, end)`` and a window length onto the data's time axis: window
``i`` assimilates the observations with times in ``[start + i L, start + (i+1) L)`` (``run.start``
and ``run.cycles``). Two modes:

``independent``
    every window starts from a fresh ensemble ``spinup`` earlier than its period (those cycles are
    left out of its metrics, ``filter.spinup``); the windows run as one job array with at most
    ``max_concurrent`` tasks at a time (``--array=0-N%K``).
``chained``
    window ``i+1`` starts from window ``i``'s final particles (``run.init``); each window is a job
    that depends on the previous one (``--dependency=afterok:ID``, ``--kill-on-invalid-dep=yes``).

With the ``local`` profile (no SLURM) the windows run one after another in one local job.

The campaign directory holds ``campaign.json`` (the manifest: the config, the profile, each
window's period, cycles, output directory and every submission of it with its log paths),
``slurm/`` (submitit's pickles and logs) and ``wNNN/`` (each window's run). A window's state
comes from its files first (``metrics.json``: done; submitit's result file holding an error:
failed), then from SLURM (pending, running, failed). :func:`resume` resubmits only the windows
that are neither done nor queued.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.atomic import write_text
from pipeline.errors import DiffdaError

from . import slurmctl
from .assimilate import EntryJob, cycles_done
from .common import DiffdaJob
from .profiles import Profile, load_profile
from .submission import KINDS, SubmitError, check, make_executor, resolve_run

MANIFEST = "campaign.json"
RESERVED = ("run.start", "run.cycles", "run.init", "filter.spinup")


class CampaignError(DiffdaError):
    pass


def parse_length(text: str) -> np.timedelta64:
    """``"5D"``, ``"36h"``, ``"2 days"``, ``"90min"`` -> a timedelta (pandas' parser)."""
    import pandas as pd

    try:
        td = pd.Timedelta(str(text))
    except (ValueError, TypeError):
        raise CampaignError(f"{text!r} is not a length; write e.g. 5D, 36h, 2days") from None
    if td <= pd.Timedelta(0):
        raise CampaignError(f"window length {text!r} must be positive")
    return np.timedelta64(td.value, "ns")


def parse_date(text: str) -> np.datetime64:
    import pandas as pd

    try:
        return np.datetime64(pd.Timestamp(str(text)).value, "ns")
    except (ValueError, TypeError):
        raise CampaignError(f"{text!r} is not a date; write e.g. 2020-01-01 or 2020-01-01T06") from None


def observation_times(data_dir: Path) -> np.ndarray:
    obs = data_dir / "observations.zarr"
    if not obs.exists():
        raise CampaignError(f"{data_dir} has no observations.zarr; make the inputs first "
                            f"(diffda make-data PRESET --out {data_dir})")
    import xarray as xr

    return xr.open_zarr(obs).time.values.astype("datetime64[ns]")


@dataclass
class Window:
    index: int
    start: str  # the window's period [start, end), ISO
    end: str
    run_start: int  # data cycles skipped (run.start)
    cycles: int  # cycles assimilated, spin-up included
    spinup: int  # cycles of spin-up at the start (left out of the metrics)
    out: str
    init: str | None = None  # chained: the previous window's output directory

    @property
    def name(self) -> str:
        return f"w{self.index:03d}"

    def overrides(self) -> list[str]:
        return window_overrides(self.__dict__)


def plan_windows(times: np.ndarray, start: str, end: str, length: str, mode: str, spinup: str | None,
                 root: Path) -> list[Window]:
    """The windows of ``[start, end)`` on the observation times ``times`` (see the module docstring)."""
    t0, t1, step = parse_date(start), parse_date(end), parse_length(length)
    spin = parse_length(spinup) if spinup else np.timedelta64(0, "ns")
    if t1 <= t0:
        raise CampaignError(f"--end {end} must be after --start {start}")
    if t0 < times[0] or t1 > times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0):
        raise CampaignError(f"the period {start} .. {end} is not inside the data's observations "
                            f"{str(times[0])[:19]} .. {str(times[-1])[:19]}")
    windows: list[Window] = []
    ws, i = t0, 0
    while ws < t1:
        we = min(ws + step, t1)
        idx = np.nonzero((times >= ws) & (times < we))[0]
        if len(idx) == 0:
            raise CampaignError(f"window {i} ({str(ws)[:19]} .. {str(we)[:19]}) holds no observation time; "
                                f"use a longer --window")
        first = int(idx[0])
        if mode == "independent":
            run_start = int(np.searchsorted(times, times[first] - spin, side="left")) if spin else first
        else:
            run_start = first
        w = Window(i, str(ws)[:19], str(we)[:19], run_start, int(idx[-1]) + 1 - run_start, first - run_start,
                   str(root / f"w{i:03d}"))
        if mode == "chained" and windows:
            w.init = windows[-1].out
        windows.append(w)
        ws, i = we, i + 1
    return windows


# ------------------------------------------------------------------------------------------
# Manifest


def load_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise CampaignError(f"{root} is not a campaign directory (no {MANIFEST})")
    return json.loads(path.read_text())


def save_manifest(root: Path, manifest: dict) -> None:
    path = Path(root) / MANIFEST
    write_text(path, json.dumps(manifest, indent=2) + "\n")


def window_job(manifest: dict, w: dict) -> EntryJob:
    """The job of window ``w``: the manifest's kind with the window's overrides."""
    return KINDS[manifest.get("kind", "run")](manifest["config"], manifest["overrides"] + window_overrides(w),
                                              manifest["data"], w["out"])


def window_overrides(w: dict) -> list[str]:
    """The one window -> config mapping (a manifest's window, or ``Window.__dict__``): its ``--set``s.

    ``run.start`` (data cycles skipped), ``run.cycles``, ``filter.spinup`` and, for a chained
    window, ``run.init`` (the previous window's output directory). Used by the submitit jobs and
    by ``diffda run-window`` (``slurm/campaign-window.sbatch``).
    """
    o = [f"run.start={w['run_start']}", f"run.cycles={w['cycles']}", f"filter.spinup={w['spinup']}"]
    if w.get("init") is not None:
        o.append(f"run.init={w['init']}")
    return o


def create(config: Path | None, overrides: list[str], data: Path | None, root: Path, profile_name: str,
           start: str, end: str, length: str, mode: str, spinup: str | None, max_concurrent: int,
           preset: str | None = None, cycle_seconds: float | None = None, kind: str = "run") -> tuple[dict, list[str]]:
    """Validate everything, plan the windows, write the manifest. Returns (manifest, warnings)."""
    if kind == "smooth" and (mode == "chained" or spinup):
        raise CampaignError("smoothing windows are independent (each uses its own observations only): "
                            "--mode chained and --spinup are for filter windows (--kind run)")
    for o in overrides:
        if o.split("=", 1)[0].strip() in RESERVED:
            raise CampaignError(f"--set {o}: the campaign sets {', '.join(RESERVED)} for each window itself")
    if mode == "chained" and spinup:
        raise CampaignError("--spinup is for independent windows; chained windows continue the previous one's particles")
    root = Path(root).resolve()
    if (root / MANIFEST).exists():
        raise CampaignError(f"{root} already holds a campaign; use `diffda campaign --resume {root}` or another --out")
    spec = resolve_run(config, overrides, data, root / "w000", preset, kind)
    profile = load_profile(profile_name)
    windows = plan_windows(observation_times(spec.data_dir), start, end, length, mode, spinup, root)
    warnings: list[str] = []
    for w in windows:  # every window's config and checks, before anything is submitted
        wspec = resolve_run(spec.config, spec.overrides + w.overrides(), spec.data_dir, Path(w.out), kind=kind)
        try:
            warnings += check(profile, wspec, cycle_seconds)
        except SubmitError as err:
            raise SubmitError(f"window {w.index} ({w.start} .. {w.end}): {err}") from None
    manifest = {
        "version": 1, "created": time.time(), "kind": kind, "mode": mode, "start": start, "end": end, "window": length,
        "spinup": spinup, "max_concurrent": max_concurrent, "config": None if spec.config is None else str(spec.config),
        "overrides": spec.overrides, "data": str(spec.data_dir), "profile": profile_name,
        "profile_settings": profile.model_dump(mode="json"),
        "windows": [dict(w.__dict__, name=w.name, submissions=[]) for w in windows],
    }
    root.mkdir(parents=True, exist_ok=True)
    save_manifest(root, manifest)
    return manifest, sorted(set(warnings))


def submit(root: Path, manifest: dict, indices: list[int], active: dict[int, str] | None = None) -> list[str]:
    """Submit windows ``indices`` (resubmissions included); record them. Returns the new job ids."""
    if not indices:
        return []
    profile = Profile.model_validate(manifest["profile_settings"])
    folder = Path(root) / "slurm"
    windows = manifest["windows"]
    now = time.time()
    ids: list[str] = []
    if profile.executor == "local":
        ex = make_executor(profile, folder, job_name="diffda-campaign")
        job = ex.submit(WindowSequence([window_job(manifest, windows[i]) for i in indices]))
        for i in indices:
            windows[i]["submissions"].append(_record(job, now, "local"))
        ids.append(str(job.job_id))
    elif manifest["mode"] == "independent":
        ex = make_executor(profile, folder, job_name=f"diffda-{Path(root).name}",
                           array_parallelism=max(1, int(manifest["max_concurrent"])))
        jobs = ex.submit_array([window_job(manifest, windows[i]) for i in indices])
        for i, job in zip(indices, jobs):
            windows[i]["submissions"].append(_record(job, now, "slurm"))
            ids.append(str(job.job_id))
    else:  # chained: one job per window, each after the previous one
        prev = None
        active = active or {}
        for i in indices:
            if prev is None and i > 0 and (i - 1) in active:
                prev = active[i - 1]
            ex = make_executor(profile, folder, job_name=f"diffda-{Path(root).name}-{windows[i]['name']}",
                               dependency=f"afterok:{prev}" if prev else None)
            job = ex.submit(window_job(manifest, windows[i]))
            windows[i]["submissions"].append(_record(job, now, "slurm"))
            ids.append(str(job.job_id))
            prev = str(job.job_id)
    save_manifest(root, manifest)
    return ids


def _record(job: Any, now: float, executor: str) -> dict:
    return {"job_id": str(job.job_id), "executor": executor, "submitted_at": now,
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr), "result": str(job.paths.result_pickle)}


class WindowSequence(DiffdaJob):
    """Several windows in one job, in order (the ``local`` profile's campaigns); skips finished ones."""

    def __init__(self, jobs: list[EntryJob]):
        self.jobs = jobs

    def work(self, should_stop: Any) -> list:
        out = []
        for job in self.jobs:
            if (Path(job.out) / "metrics.json").exists():
                continue
            out.append(job.work(should_stop))
        return out


# ------------------------------------------------------------------------------------------
# Status


@dataclass
class WindowStatus:
    index: int
    name: str
    state: str  # pending, running, done, failed, not submitted
    cycles_done: int
    cycles: int
    job_id: str | None
    log: str | None
    detail: str = ""
    eta: float | None = None  # epoch seconds


def _result_error(path: str | None) -> str | None:
    """The error recorded in a submitit result file, or None (no file, or a success)."""
    from .submission import read_result

    outcome = read_result(Path(path)) if path else None
    if outcome is None:
        return None
    kind, value = outcome
    if kind != "error":
        return None
    lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "error"


def _local_alive(job_id: str) -> bool:
    try:
        os.kill(int(job_id), 0)
        return True
    except (ValueError, OSError):
        return False


def window_states(root: Path, manifest: dict | None = None) -> list[WindowStatus]:
    manifest = manifest or load_manifest(root)
    windows = manifest["windows"]
    last = {w["index"]: (w["submissions"][-1] if w["submissions"] else None) for w in windows}
    slurm_ids = [s["job_id"] for s in last.values() if s and s["executor"] == "slurm"]
    infos = slurmctl.query(slurm_ids) if slurm_ids else {}
    now = time.time()
    out = []
    for w in windows:
        sub = last[w["index"]]
        out_dir = Path(w["out"])
        done_cycles = cycles_done(out_dir)
        st = WindowStatus(w["index"], w["name"], "not submitted", done_cycles, w["cycles"],
                          sub["job_id"] if sub else None, sub["stderr"] if sub else None)
        if (out_dir / "metrics.json").exists():
            st.state, st.cycles_done = "done", w["cycles"]
        elif sub is not None:
            err = _result_error(sub.get("result"))
            if sub["executor"] == "slurm":
                info = infos.get(sub["job_id"])
                slurm_state = info.state if info else "UNKNOWN"
                if err is not None:
                    st.state, st.detail = "failed", err
                elif slurm_state == "RUNNING":
                    st.state = "running"
                elif info is not None and info.active:
                    st.state = "pending"
                    st.detail = slurm_state.lower() + (f", {info.reason}" if info.reason not in ("", "None") else "")
                elif slurm_state == "UNKNOWN":
                    st.state, st.detail = "failed", "the job is gone from SLURM without finishing"
                else:
                    st.state, st.detail = "failed", f"SLURM state {slurm_state}" + (
                        f", exit code {info.exit_code}" if info and info.exit_code else "")
            else:
                if err is not None:
                    st.state, st.detail = "failed", err
                elif _local_alive(sub["job_id"]):
                    st.state = "running" if (out_dir / "job.json").exists() or done_cycles else "pending"
                else:
                    st.state, st.detail = "failed", "the local job ended without finishing this window"
        if st.state == "running":
            st.eta = _eta(out_dir, done_cycles, w["cycles"], now)
        out.append(st)
    return out


def _eta(out_dir: Path, done: int, total: int, now: float) -> float | None:
    try:
        note = json.loads((out_dir / "job.json").read_text())
    except (OSError, ValueError):
        return None
    progressed = done - int(note.get("start_cycle", 0))
    elapsed = now - float(note.get("since", now))
    if progressed <= 0 or elapsed <= 0:
        return None
    return now + (total - done) * elapsed / progressed


def seconds_per_cycle(root: Path, manifest: dict) -> float | None:
    """Mean wall seconds per cycle of the finished windows, their jobs' start-up included."""
    rates = []
    for w in manifest["windows"]:
        out = Path(w["out"])
        try:
            note = json.loads((out / "job.json").read_text())
            elapsed = (out / "metrics.json").stat().st_mtime - float(note["since"])
            cycles = int(w["cycles"]) - int(note.get("start_cycle", 0))
            if elapsed > 0 and cycles > 0:
                rates.append(elapsed / cycles)
        except (OSError, ValueError, KeyError):
            continue
    return float(np.mean(rates)) if rates else None


def resume(root: Path) -> tuple[list[int], list[str]]:
    """Resubmit the windows that are neither done nor queued/running. Returns (indices, job ids)."""
    root = Path(root).resolve()
    manifest = load_manifest(root)
    states = window_states(root, manifest)
    todo = [s.index for s in states if s.state in ("failed", "not submitted")]
    active = {s.index: s.job_id for s in states if s.state in ("pending", "running") and s.job_id}
    if manifest["mode"] == "chained" and todo:
        # a chain resumes from its first unfinished window; later ones wait on it again
        first = todo[0]
        todo = [s.index for s in states[first:] if s.state != "done" and s.index not in active]
        if any(i > first for i in active):
            raise CampaignError(f"windows {sorted(i for i in active if i > first)} are still queued after the "
                                f"unfinished window {first}; scancel them first")
    ids = submit(root, manifest, todo, active)
    return todo, ids

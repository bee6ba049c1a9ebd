"""A campaign of smoothing windows (``diffda campaign --kind smooth``) on the linear twin, without SLURM.

Three independent windows of 6 observation times (k = 2, S = 16, 8 steps). The campaign is stopped
after its first window (the job's stop flag, as on USR2/SIGTERM), then resumed
(``diffda campaign --resume`` through submitit's local executor): only the two unfinished windows are
resubmitted, the finished one is never written again, and every window's posterior mean and spread
equal those of an uninterrupted campaign. A complete window rerun by its array task
(``diffda run-window``) is skipped by the job itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from jobs import campaign
from jobs.cli import main
from jobs.common import JobStopped
from jobs.submission import SubmitError

PRESET = Path(__file__).resolve().parents[1] / "pipeline" / "presets" / "linear-smooth.yaml"
FAST = ["smoother.samples=16", "sampler.steps=8", "smoother.window_half_width=2"]
PERIOD = ("2000-01-01T06", "2000-01-05T18", "36h")  # 6-hourly data: 3 windows of 6 times


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pipeline.commands.make_data import make_data

    d = tmp_path_factory.mktemp("linear") / "data"
    make_data("linear", d, {"cycles": 24})
    return d


def plan(data: Path, root: Path, overrides: list[str] = FAST, **kw) -> dict:
    manifest, _ = campaign.create(PRESET, overrides, data, root, "local", *PERIOD, kw.pop("mode", "independent"),
                                  kw.pop("spinup", None), 2, kind="smooth")
    return manifest


def sequence(manifest: dict) -> campaign.WindowSequence:
    """The job a ``local``-profile campaign runs: every window in order."""
    return campaign.WindowSequence([campaign.window_job(manifest, w) for w in manifest["windows"]])


def written(out: Path) -> tuple[int, int]:
    """When the window's marker and store were written (a rewrite changes either)."""
    return (out / "metrics.json").stat().st_mtime_ns, (out / "analysis.zarr").stat().st_ino


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    manifest = plan(data, tmp_path_factory.mktemp("whole") / "campaign")
    sequence(manifest).work(lambda: False)
    return manifest


def test_interrupted_campaign_resumes_and_writes_each_window_once(data, uninterrupted, tmp_path):
    from jobs.commands.status import wait_campaign

    root = tmp_path / "campaign"
    manifest = plan(data, root)
    assert manifest["kind"] == "smooth"
    ws = manifest["windows"]
    assert [(w["run_start"], w["cycles"], w["spinup"]) for w in ws] == [(0, 6, 0), (6, 6, 0), (12, 6, 0)]
    polls = []
    with pytest.raises(JobStopped):  # a stop request once the first window is written
        sequence(manifest).work(lambda: polls.append(1) or len(polls) > 1)
    outs = [Path(w["out"]) for w in ws]
    assert (outs[0] / "metrics.json").exists() and not any((o / "metrics.json").exists() for o in outs[1:])
    assert not (outs[1] / "analysis.zarr").exists()
    first = written(outs[0])

    indices, ids = campaign.resume(root)
    assert indices == [1, 2] and len(ids) == 1  # the finished window is not resubmitted
    assert wait_campaign(root, poll_s=0.5) == 0
    assert written(outs[0]) == first

    for w, ref in zip(ws, uninterrupted["windows"]):
        got, want = (xr.open_zarr(Path(p) / "analysis.zarr").load() for p in (w["out"], ref["out"]))
        assert int(got.attrs["complete"]) == 1 and got.sizes["time"] == 6
        for var in ("x", "x_spread"):
            np.testing.assert_allclose(got[var].values, want[var].values, rtol=0, atol=1e-12)
        assert json.loads((Path(w["out"]) / "metrics.json").read_text())["fingerprint"]


def test_complete_window_is_skipped_by_its_job(uninterrupted, capsys):
    out = Path(uninterrupted["windows"][1]["out"])
    before = written(out)
    assert main(["run-window", str(Path(out).parent), "1"]) == 0
    assert "already holds this window" in capsys.readouterr().err
    assert written(out) == before


def test_smoothing_campaign_refusals(data, tmp_path):
    with pytest.raises(campaign.CampaignError, match="--mode chained and --spinup"):
        plan(data, tmp_path / "a", mode="chained")
    with pytest.raises(campaign.CampaignError, match="--mode chained and --spinup"):
        plan(data, tmp_path / "b", spinup="12h")
    with pytest.raises(SubmitError, match="smoother.window_half_width=3 needs a window of at least 2k\\+1 = 7"):
        plan(data, tmp_path / "c", [*FAST, "smoother.window_half_width=3"])
    assert not (tmp_path / "c").exists()

"""run.free_baseline: the free run of the same ensemble beside the filter, and maps.png."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("dinosaur")

RUN = ["run.cycles=3", "filter.particles=4", "sampler.steps=2", "run.micro_batch=4"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from pipeline.data import sphere

    out = tmp_path_factory.mktemp("emu")
    sphere.make_sphere(out, {"days": 1, "spinup_days": sphere.SHIPPED_SPINUP, "seed": 5, "truth": "emulator",
                             "sampler_steps": 2})
    return out


def _run(twin, out, extra):
    import xarray as xr

    from pipeline.commands.run import EMBEDDED_DEFAULT
    from pipeline.config import load_config
    from pipeline.run import assimilate

    cfg = load_config(EMBEDDED_DEFAULT, [*RUN, *extra])
    res = assimilate(cfg, twin, out, fresh=True)
    return res.metrics, xr.open_zarr(out / "analysis.zarr")


def test_free_baseline_is_the_free_run_of_the_same_ensemble(twin, tmp_path):
    from pipeline.commands.run import EMBEDDED_DEFAULT
    from pipeline.config import load_config

    assert load_config(EMBEDDED_DEFAULT).run.free_baseline  # on in the embedded default
    m, ds = _run(twin, tmp_path / "pf", [])
    m_free, ds_free = _run(twin, tmp_path / "free", ["filter.method=free", "run.free_baseline=false"])
    # same seeds, same propagation keys: the baseline is filter.method=free, cycle for cycle
    np.testing.assert_allclose(ds.rmse_free.values, ds_free.rmse_analysis.values, rtol=1e-6)
    assert m["rmse_free"] == pytest.approx(m_free["rmse_analysis"], rel=1e-6)
    assert json.loads((tmp_path / "pf" / "metrics.json").read_text())["rmse_free"] == pytest.approx(m["rmse_free"])
    # the filter itself is not the free run (observations were used)
    assert not np.allclose(ds.rmse_analysis.values, ds.rmse_free.values)
    assert np.isnan(ds_free.rmse_free.values).all() and m_free["rmse_free"] is None
    png = tmp_path / "pf" / "maps.png"
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_free_baseline_resumes(twin, tmp_path):
    """Stopped after cycle 2 and resumed: the baseline's RMSE is that of the uninterrupted run."""
    from pipeline.commands.run import EMBEDDED_DEFAULT
    from pipeline.config import load_config
    from pipeline.run import assimilate

    cfg = load_config(EMBEDDED_DEFAULT, RUN)
    whole = assimilate(cfg, twin, tmp_path / "a", fresh=True).metrics
    assimilate(cfg, twin, tmp_path / "b", fresh=True, stop_after=2)
    resumed = assimilate(cfg, twin, tmp_path / "b").metrics
    assert resumed["rmse_free"] == pytest.approx(whole["rmse_free"], rel=1e-6)


def test_summary_prints_the_free_run_beside_the_analysis(capsys, tmp_path):
    from pipeline.commands.run import print_summary
    from pipeline.config import load_config

    print_summary(load_config(), {"rmse_analysis": 0.2, "rmse_free": 0.4}, tmp_path, 0)
    out = capsys.readouterr().out
    assert "0.2 / 0.4 (ratio 0.5: the observations help)" in out and "rmse_free" in out


def test_observed_points_mask():
    from pipeline.evaluate.maps import observed_points

    shape = (3, 4, 5)
    idx = np.ravel_multi_index(([0, 2, 2], [1, 1, 3], [0, 0, 4]), shape)
    mask = observed_points(idx, shape)
    assert mask.shape == (4, 5) and mask.sum() == 2 and mask[1, 0] and mask[3, 4]

"""diffda bench kde: every row of every sweep a valid run configuration; bad arguments refused up front."""

from __future__ import annotations

import pytest

from pipeline.bench.bench_kde import KDE_BANDWIDTHS_X, KDE_BANDWIDTHS_Y, METHODS, SETTINGS, base_overrides
from pipeline.cli import main
from pipeline.config import load_config


@pytest.mark.parametrize("key", list(SETTINGS))
def test_every_row_of_every_sweep_is_a_valid_run(key):
    for method, sweep in METHODS.items():
        for extra in sweep:
            cfg = load_config(overrides=[*base_overrides(key, 300, []), "filter.particles=20", *extra])
            assert cfg.filter.method == method and cfg.data.params["cycles"] == 300 and cfg.filter.spinup == 30


def test_the_kde_sweep_is_the_stated_grid_of_bandwidth_factors():
    cfgs = [load_config(overrides=[*base_overrides("abs", 300, []), *extra]) for extra in METHODS["kde"]]
    got = {(c.filter.kde_bandwidth_x, c.filter.kde_bandwidth_y) for c in cfgs}
    assert got == {(bx, by) for bx in KDE_BANDWIDTHS_X for by in KDE_BANDWIDTHS_Y} and len(cfgs) == len(got)
    assert {c.sampler.steps for c in cfgs} == {32}


@pytest.mark.parametrize("flag,value", [("--methods", "kde,nope"), ("--settings", "x3,nope")])
def test_unknown_method_or_setting_is_refused_before_any_work(tmp_path, capsys, flag, value):
    assert main(["bench", "kde", flag, value, "--out", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "out").exists()

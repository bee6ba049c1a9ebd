"""diffda bench abs: the rows the issue asks for, each a valid run configuration; a bad --methods refused up front."""

from __future__ import annotations

from pipeline.bench.bench_abs import METHODS, data_overrides
from pipeline.cli import main
from pipeline.config import load_config


def test_every_method_of_the_issue_is_a_valid_row():
    cfgs = {label: load_config(overrides=[*data_overrides(400, 40), "filter.particles=20", *extra])
            for label, extra in METHODS.items()}
    assert {c.filter.method for c in cfgs.values()} == {"pf-optimal", "pf-local", "letkf", "etkf", "kde", "pf-bootstrap"}
    assert cfgs["pf-optimal"].filter.tempering == "none" and cfgs["pf-optimal-tempered"].filter.tempering == "adaptive"
    params = cfgs["etkf"].data.params
    assert (params["operator"], params["r"], params["q"], params["cycles"]) == ("abs", 1.0, 0.1, 400)


def test_unknown_method_is_refused_before_any_work(tmp_path, capsys):
    assert main(["bench", "abs", "--methods", "etkf,nope", "--out", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "out").exists()

"""diffda bench skill (rollout reporting, --quick, --checkpoint) and diffda bench gpu (refusal, CPU smoke run)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("dinosaur")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pipeline.data import sphere

    out = tmp_path_factory.mktemp("sphere10")
    sphere.make_sphere(out, {"days": 10, "spinup_days": sphere.SHIPPED_SPINUP, "seed": 4})  # 41 times
    return out


@pytest.fixture(scope="module")
def emulator(store):
    from pipeline.models.network_checkpoint import GridLayout, read_meta
    from pipeline.models.neural import NeuralDenoiser
    from pipeline.models.store import read_trajectory
    from pipeline.models.weights import default_checkpoint

    den = NeuralDenoiser.from_checkpoint(default_checkpoint())
    want = GridLayout.from_meta(read_meta(default_checkpoint()))
    data, layout = read_trajectory(store, variables=want.variables, levels=want.levels)
    return den, den.normalisation.normalise(data.double()).float(), layout


def test_rollout_section_numbers(emulator):
    from pipeline.bench.bench_skill import rollout_section
    from pipeline.models.skill import latitude_weights

    den, z, layout = emulator
    body, r = rollout_section(den, z, z, layout, leads=6, sampled_days=1, starts=1, members=2, steps=2)
    # persistence from start s = history - 1: the latitude-weighted RMS of z[s + lead] - z[s]
    w, s = latitude_weights(layout.latitude, z), den.history - 1
    for lead in (1, 6):
        want = float((((z[s + lead] - z[s]) ** 2) * w).mean().sqrt())
        assert r["persistence_rmse"][lead - 1] == pytest.approx(want, rel=1e-5)
    beats = [m < p for m, p in zip(r["mean_rmse"], r["persistence_rmse"])]
    until = r["beats_persistence_until_steps"]
    assert until == (None if all(beats) else beats.index(False))
    assert r["mean_rmse"][0] < 0.5 * r["persistence_rmse"][0]  # 6-hour skill of the shipped emulator (0.076 vs 0.21)
    assert set(r["spread_error_ratio"]) == {1, 4} and all(v > 0 for v in r["spread_error_ratio"].values())
    assert 0 <= r["outside_worst"] <= 1 and r["max_abs_z_worst"] >= r["max_abs_z_last"] > 0
    assert "beats persistence" in body and "spread/error ratio" in body


def test_rollout_range_check_counts_values_outside(emulator):
    from pipeline.models.skill import rollout_skill

    den, z, layout = emulator
    C = z.shape[1]
    wide = (torch.full((C,), -1e6), torch.full((C,), 1e6))
    empty = (torch.full((C,), 1e3), torch.full((C,), 1e3))
    kw = dict(starts=1, leads=2, members=2, sampled_leads=2, steps=2, margin=0.0)
    assert max(rollout_skill(den, z, layout, bounds=wide, **kw)["sampled"]["outside"]) == 0.0
    assert min(rollout_skill(den, z, layout, bounds=empty, **kw)["sampled"]["outside"]) == 1.0
    # sampled leads past the end of the trajectory are run but not scored
    r = rollout_skill(den, z[:8], layout, starts=1, leads=2, members=2, sampled_leads=10, steps=2)
    assert len(r["sampled"]["outside"]) == 10 and math.isnan(r["sampled"]["rmse_ensemble_mean"][-1])
    assert not math.isnan(r["sampled"]["rmse_ensemble_mean"][0])


def test_bench_skill_quick_cli(store, tmp_path):
    from pipeline.cli import main
    from pipeline.models.weights import default_checkpoint

    report = tmp_path / "bench.md"
    rc = main(["bench", "skill", "--data", str(store), "--test", str(store), "--quick",
               "--checkpoint", str(default_checkpoint()), "--report", str(report)])
    text = report.read_text()
    assert rc == 0 and "Quick mode" in text and "### Rollouts on" in text and "mean rollout RMSE" in text


def test_bench_gpu_refuses_without_cuda():
    from pipeline.errors import DiffdaError
    from pipeline.bench.bench_gpu import check_device

    with pytest.raises(DiffdaError, match="--quick"):
        check_device("cpu", quick=False)
    if not torch.cuda.is_available():
        with pytest.raises(DiffdaError, match="needs a CUDA GPU"):
            check_device("cuda", quick=False)


def test_bench_gpu_cpu_smoke(store, tmp_path):
    from pipeline.bench.bench_gpu import run_gpu_bench
    from pipeline.models.weights import default_checkpoint

    body, r = run_gpu_bench(store, tmp_path, default_checkpoint(), device="cpu", quick=True)
    assert [row["dtype"] for row in r["cycle"]] == ["fp32", "bf16"]
    for row in r["cycle"]:
        assert 0.3 < row["fraction"] <= 1.0  # the network dominates even a toy CPU cycle
    assert len(r["denoiser"]) == 4 and all(row["rate"] > 0 for row in r["denoiser"])
    coll = r["collectives"]
    assert coll["backend"] == "gloo" and coll["ranks"] == 2
    assert all(row["correct"] for row in coll["rows"])  # sum over ranks of (rank + 1) = 3
    assert "not a benchmark" in body and "Device: CPU" in body

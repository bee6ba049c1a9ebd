"""The trained window networks (``diffda train --set kind=window-mlp|window-conv``, ``diffda smooth --set
model=neural``) on the linear twin against the exact Gaussian window denoiser and the RTS smoother; their
refusals; resumption.

Setting: the linear twin with 4 components (every other observed, r = 0.25), a window of L = 9
observation times and k = 4 (full width: the composed prior is the window prior itself, so every error
below is the network's or Monte-Carlo's). Each network is trained for 1500 steps (batch 256) on a run of
20000 cycles of the same chain (another seed than the smoothed data): about 20 s (MLP) and 16 s (ring
convolution, 64 channels, one block, kernel 3) on one core. The linear twin's components lie on a ring (``x'_d`` couples
``x_{d-1}, x_d, x_{d+1}``, periodic), so its exact window denoiser commutes with the rotations and is also
the oracle of the ring-convolutional network.
"""

import json

import pytest
import torch

from pipeline.cli import main
from pipeline.data.twins import system_of, twin_params
from pipeline.diffusion.schedules import make_schedule
from pipeline.errors import DiffdaError, InputError
from pipeline.models.dynamics import Linear
from pipeline.models.train import TRAIN_STATE, TrainOptions
from pipeline.smoothers.gaussian import GaussianWindowDenoiser
from pipeline.smoothers.neural import NeuralWindowDenoiser
from pipeline.smoothers.train_window import train_window_from_store

DIM, K, L = 4, 4, 9
TRAIN = ["--set", f"window_half_width={K}", "--set", "steps=1500", "--set", "batch_size=256",
         "--set", "lr=1e-3", "--set", "checkpoint_every=1500", "--set", "threads=1"]
CONV = ["--set", "kind=window-conv", "--set", "hidden=64", "--set", "depth=1", "--set", "kernel=3"]
SMOOTH = ["--set", "model=neural", "--set", f"smoother.window_half_width={K}", "--set", f"run.cycles={L}",
          "--set", "sampler.steps=32", "--set", "guidance=sda", "--set", "guidance.gamma=0.1"]
SIGMAS = (0.1, 0.3, 1.0, 3.0, 10.0)  # sigma / s_bar


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("window-net")
    assert main(["make-data", "linear", "--out", str(root / "long"), "--set", "cycles=20000", "--set", f"dim={DIM}",
                 "--set", "seed=1"]) == 0
    assert main(["make-data", "linear", "--out", str(root / "data"), "--set", "cycles=40", "--set", f"dim={DIM}"]) == 0
    assert main(["train", "--data", str(root / "long"), "--out", str(root / "net"), *TRAIN,
                 "--set", "kind=window-mlp"]) == 0
    return root


@pytest.fixture(scope="module")
def conv(trained):
    """The ring-convolutional window network, trained on the same run into ``trained / "conv"``."""
    assert main(["train", "--data", str(trained / "long"), "--out", str(trained / "conv"), *TRAIN, *CONV]) == 0
    return trained / "conv"


def relative_errors(ckpt) -> tuple[list[float], list[float]]:
    """RMS of (network - exact) and of (independent prior - exact) window denoisers over windows of the
    stationary chain, in units of the exact posterior std, at each ``sigma / s_bar`` of ``SIGMAS``."""
    params = twin_params("linear", {"dim": DIM})
    net = NeuralWindowDenoiser.from_checkpoint(ckpt, make_schedule("vp-cosine"), K, system_of("linear", params))
    exact = GaussianWindowDenoiser(make_schedule("vp-cosine"), Linear(0.95, 0.25).matrix(DIM),
                                   0.1 * torch.eye(DIM, dtype=torch.float64), K)
    g = torch.Generator().manual_seed(7)
    n, width = 4096, 2 * K + 1
    chol = torch.linalg.cholesky(exact.covariance)
    x = (torch.randn(n, width * DIM, generator=g, dtype=torch.float64) @ chol.T).reshape(n, width, DIM)
    errs, independent = [], []
    for s in SIGMAS:
        sigma = s * net.s_bar
        x_sigma = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
        lam, U = exact.lam, exact.U
        d_exact = ((x_sigma.flatten(1) @ U) * lam / (lam + sigma**2) @ U.T).reshape(x.shape)  # alpha = 1
        post_std = float((lam * sigma**2 / (lam + sigma**2)).mean().sqrt())
        sig = torch.full((n,), sigma, dtype=torch.float64)
        with torch.no_grad():
            d_net = net.edm(x_sigma, sig)
        c_skip = net.coefficients(sig, x)[0]
        d_ind = net.mean + c_skip * (x_sigma - net.mean)
        errs.append(float(((d_net - d_exact) ** 2).mean().sqrt()) / post_std)
        independent.append(float(((d_ind - d_exact) ** 2).mean().sqrt()) / post_std)
    return errs, independent


def test_trained_window_network_approximates_the_exact_window_denoiser(trained):
    """At every noise level the network's posterior mean is within 0.2 exact posterior std of the exact
    one (measured 0.02-0.10), while the independent prior its preconditioning starts from (F = 0) is
    not (measured 0.5-0.98 at sigma/s_bar = 0.3-3): the network learned the window's correlations. 0.2:
    twice the measured error, and small enough that the sampled trajectories move by a fraction of
    their spread (the smoothing test below checks the effect against RTS)."""
    errs, independent = relative_errors(trained / "net")
    assert max(errs) < 0.2, errs
    assert independent[SIGMAS.index(1.0)] > 0.4, independent
    meta = json.loads((trained / "net" / "meta.json").read_text())
    assert meta["architecture"]["kind"] == "window-mlp" and meta["window"] == {"half_width": K, "width": 2 * K + 1, "dim": DIM}
    assert meta["system"] == {"preset": "linear", "dim": DIM, "a": 0.95, "c": 0.25, "q": 0.1}
    check = meta["training"]["denoising"]  # the held-out check of diffda train: better than F = 0 from sigma = s_bar
    assert all(a < b for a, b in zip(check["rmse_network"][2:], check["rmse_independent"][2:]))


def test_ring_convolution_approximates_the_exact_window_denoiser(conv):
    """``kind=window-conv``: at every noise level the network's posterior mean is within 0.2 exact posterior
    std of the exact one (measured 0.02-0.10, as the MLP's; 0.2 derived as in the MLP's test above), the
    independent prior is not; its normalisation is pooled over the ring (one mean, one std) and the whole
    denoiser ``D`` commutes with the ring's rotations."""
    errs, independent = relative_errors(conv)
    assert max(errs) < 0.2, errs
    assert independent[SIGMAS.index(1.0)] > 0.4, independent
    meta = json.loads((conv / "meta.json").read_text())
    assert meta["architecture"] == {"kind": "window-conv", "width": 2 * K + 1, "dim": DIM, "channels": 64, "depth": 1,
                                    "kernel": 3, "emb": 64}
    assert len(set(meta["normalisation"]["mean"])) == len(set(meta["normalisation"]["std"])) == 1
    system = system_of("linear", twin_params("linear", {"dim": DIM}))
    den = NeuralWindowDenoiser.from_checkpoint(conv, make_schedule("vp-cosine"), K, system)
    x_t = torch.randn(3, 2 * K + 1, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(den(x_t.roll(1, -1), t), den(x_t, t).roll(1, -1))


def test_smooth_with_the_trained_network_lands_near_rts(trained, tmp_path):
    """``diffda smooth --set model=neural`` (SDA guidance, gamma 0.1): the smoothed mean is within
    ``oracle_mc + eps`` RTS posterior std of the RTS mean on average, ``oracle_mc`` three Monte-Carlo
    standard errors of S = 256 samples and ``eps`` the network's largest error in posterior std (the test
    above: a denoiser off by eps posterior std at every noise level moves the samples' mean by about that);
    the exact window denoiser with the same guidance and seeds gives 0.040 (the Monte-Carlo floor), the
    network 0.044. RMSE within 10 % of the RTS smoother's, spread within 25 % of RTS's (SDA's is 0.87 of it
    with the exact prior as well)."""
    eps = max(relative_errors(trained / "net")[0])
    out = tmp_path / "out"
    rc = main(["smooth", "pipeline/presets/linear-smooth.yaml", "--data", str(trained / "data"), "--out", str(out),
               *SMOOTH, "--set", f"model.checkpoint={trained / 'net'}"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "neural"
    assert m["oracle_error"] < m["oracle_mc"] + eps, (m, eps)
    assert abs(m["rmse_analysis"] / m["rmse_rts"] - 1) < 0.10
    assert 0.75 < m["oracle_spread_ratio"] < 1.25


@pytest.mark.parametrize("network", ["net", "conv"])
@pytest.mark.parametrize("overrides, data, message", [
    (["smoother.window_half_width=3"], "data", "smoother.window_half_width"),
    ([], "wide", "components"),
    ([], "other", "a=0.95"),
    (["guidance=mmps", "guidance.covariance=jacobian"], "data", "guidance.covariance"),
])
def test_mismatched_window_network_refused(trained, request, tmp_path, capsys, overrides, data, message, network):
    """A network (MLP or ring convolution) of another width, dimension or system, or MMPS through its
    Jacobian: refused before any work (nothing written), the message naming the key."""
    ckpt = request.getfixturevalue("conv") if network == "conv" else trained / network
    if data == "wide":
        assert main(["make-data", "linear", "--out", str(tmp_path / data), "--set", "cycles=40", "--set", "dim=6"]) == 0
    elif data == "other":
        assert main(["make-data", "linear", "--out", str(tmp_path / data), "--set", "cycles=40", "--set", f"dim={DIM}",
                     "--set", "a=0.9"]) == 0
    capsys.readouterr()
    where = trained / data if data == "data" else tmp_path / data
    rc = main(["smooth", "pipeline/presets/linear-smooth.yaml", "--data", str(where), "--out", str(tmp_path / "o"),
               *SMOOTH, "--set", f"model.checkpoint={ckpt}", *[a for o in overrides for a in ("--set", o)]])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_window_network_is_no_emulator_and_a_twin_store_no_grid(trained, tmp_path, capsys):
    from pipeline.models.neural import NeuralDenoiser

    with pytest.raises(InputError, match="model.checkpoint=.* holds a window-mlp network"):
        NeuralDenoiser.from_checkpoint(trained / "net")
    rc = main(["train", "--data", str(trained / "data"), "--out", str(tmp_path / "ck"), "--set", "steps=2"])
    assert rc == 2 and "kind=window-mlp" in capsys.readouterr().err
    with pytest.raises(DiffdaError, match="kind must be one of"):
        TrainOptions(kind="window-gru")
    with pytest.raises(DiffdaError, match="kernel must be odd"):
        TrainOptions(kind="window-conv", kernel=4)
    with pytest.raises(DiffdaError, match="kind=window-mlp has no condition"):
        TrainOptions(kind="window-mlp", cond_noise=0.1)


def test_resumed_window_training_equals_an_uninterrupted_run(trained, tmp_path):
    """The window network trains in the emulator's loop: stopped at step 3 and resumed, it ends with the
    same bytes as a run of 6 steps."""
    opts = TrainOptions(kind="window-mlp", window_half_width=1, steps=6, batch_size=16, hidden=32, depth=1, emb=16,
                        checkpoint_every=3, warmup=2, lr=1e-3)
    train_window_from_store(trained / "data", tmp_path / "full", opts)
    train_window_from_store(trained / "data", tmp_path / "split", opts, stop_at=3)
    assert torch.load(tmp_path / "split" / TRAIN_STATE, weights_only=False)["step"] == 3
    train_window_from_store(trained / "data", tmp_path / "split", opts)
    a = torch.load(tmp_path / "full" / TRAIN_STATE, weights_only=False)
    b = torch.load(tmp_path / "split" / TRAIN_STATE, weights_only=False)
    assert a["step"] == b["step"] == 6 and a["kind"] == "window-mlp"
    for key in ("model", "ema"):
        assert all(torch.equal(v, b[key][name]) for name, v in a[key].items()), key
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()


def test_ring_convolution_refused_off_a_ring_and_over_another_kind(conv, trained, tmp_path, capsys):
    """``kind=window-conv``: refused on Lorenz-63 (three components, no ring) and for a resumption of a
    window-mlp checkpoint directory; the emulator refuses its checkpoint, naming the kind."""
    from pipeline.models.neural import NeuralDenoiser

    with pytest.raises(InputError, match="holds a window-conv network"):
        NeuralDenoiser.from_checkpoint(conv)
    assert main(["make-data", "lorenz63", "--out", str(tmp_path / "l63"), "--set", "cycles=40"]) == 0
    capsys.readouterr()
    rc = main(["train", "--data", str(tmp_path / "l63"), "--out", str(tmp_path / "ck"), *CONV, "--set", "steps=2"])
    assert rc == 2 and "kind=window-mlp" in capsys.readouterr().err and not (tmp_path / "ck").exists()
    rc = main(["train", "--data", str(trained / "long"), "--out", str(trained / "net"), *TRAIN, *CONV])
    assert rc == 2 and "window-mlp" in capsys.readouterr().err

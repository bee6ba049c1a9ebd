"""Neural checkpoints: safetensors + meta.json round trip, and refusal of mismatched inputs."""

import json

import pytest
import torch

from pipeline.diffusion.schedules import VPCosine
from pipeline.errors import InputError
from pipeline.models.network_checkpoint import GridLayout, check_compatible, load_checkpoint, make_meta, read_meta, save_checkpoint
from pipeline.models.neural import NeuralDenoiser
from pipeline.models.normalisation import Normalisation
from pipeline.models.train import init_network
from pipeline.models.unet import UNetConfig

LEVELS = (250.0, 500.0, 850.0)


def layout(variables=("temperature", "geopotential"), levels=LEVELS, h=8, w=16, descending=False):
    lat = [-90 + 180 * (i + 0.5) / h for i in range(h)]
    lat = lat[::-1] if descending else lat
    return GridLayout(tuple((v, lv) for v in variables for lv in levels), tuple(lat), tuple(360 * j / w for j in range(w)))


def saved(tmp_path):
    lay = layout()
    cfg = UNetConfig(channels=6, history=2, base=8, mults=(1, 2), emb=16)
    net = init_network(cfg, seed=3)
    with torch.no_grad():
        net.out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    norm = Normalisation(tuple(range(6)), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0), (0.1,) * 6)
    meta = make_meta(cfg, lay, norm, step=7, schedule={"kind": "vp-cosine", "params": {}})
    save_checkpoint(tmp_path / "ckpt", net, meta)
    return net, meta, lay


def test_round_trip_gives_bitwise_equal_outputs(tmp_path):
    net, meta, lay = saved(tmp_path)
    net2, meta2 = load_checkpoint(tmp_path / "ckpt")
    assert meta2 == json.loads(json.dumps(meta))
    for (k, v), (k2, v2) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    den1 = NeuralDenoiser(net.eval(), VPCosine(), Normalisation.from_dict(meta["normalisation"]))
    den2 = NeuralDenoiser.from_checkpoint(tmp_path / "ckpt")
    assert isinstance(den2.schedule, VPCosine) and den2.history == 2
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 6, 8, 16, generator=g), torch.randn(2, 2, 6, 8, 16, generator=g)
    assert torch.equal(den1(x, torch.tensor(0.4), c), den2(x, torch.tensor(0.4), c))
    assert read_meta(tmp_path / "ckpt")["training"]["step"] == 7
    assert meta["variables"] == ["temperature", "geopotential"] and meta["levels"] == list(LEVELS)


def test_matching_layout_is_accepted(tmp_path):
    _, meta, lay = saved(tmp_path)
    check_compatible(meta, lay)


@pytest.mark.parametrize("bad,words", [
    (layout(h=16, w=32), ["latitude", "longitude", "16 points", "regrid"]),
    (layout(variables=("temperature", "u_component_of_wind")), ["missing from the inputs: geopotential", "u_component_of_wind"]),
    (layout(levels=(250.0, 500.0, 700.0)), ["levels differ", "missing 850", "extra 700"]),
    (layout(descending=True), ["latitude runs the other way", "sortby"]),
    (layout(variables=("geopotential", "temperature")), ["another order"]),
])
def test_mismatched_inputs_are_refused_naming_the_difference(tmp_path, bad, words):
    _, meta, _ = saved(tmp_path)
    with pytest.raises(InputError) as err:
        check_compatible(meta, bad)
    for w in words:
        assert w in str(err.value)


def test_missing_checkpoint_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="diffda train"):
        NeuralDenoiser.from_checkpoint(tmp_path / "nothing")


def test_from_checkpoint_checks_the_layout(tmp_path):
    _, _, lay = saved(tmp_path)
    NeuralDenoiser.from_checkpoint(tmp_path / "ckpt", layout=lay)
    with pytest.raises(InputError, match="levels differ"):
        NeuralDenoiser.from_checkpoint(tmp_path / "ckpt", layout=layout(levels=(500.0, 850.0, 1000.0)))

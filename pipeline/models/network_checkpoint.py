r"""Neural checkpoints: ``model.safetensors`` (weights) + ``meta.json`` (everything else).

A checkpoint directory holds

- ``model.safetensors``: the inference weights (the EMA weights when trained with EMA);
- ``meta.json``: ``format``, ``software`` (diffda and torch versions), ``architecture``
  (:class:`UNetConfig` fields), ``channels`` (``[[variable, level or null], ...]`` in channel
  order), ``variables``, ``levels``, ``grid`` (``latitude``, ``longitude`` in degrees, stored
  order), ``normalisation`` (:class:`Normalisation`), ``schedule`` (suggested sampling schedule),
  ``preconditioning`` (``residual``, ``sigma_min``, ``sigma_max``), ``history`` (K), ``training``
  (``step``, options).

``architecture.kind`` names the network: ``sphere-unet`` (the gridded emulator above), ``window-mlp`` or
``window-conv`` (the smoother's window prior over ``2k+1`` twin states, an MLP or a ring convolution,
whose ``meta.json`` holds ``window``, ``normalisation`` and ``system`` instead of channels and grid:
:mod:`pipeline.smoothers.neural`), or ``window-unet`` (the smoother's window prior over ``2k+1`` gridded
states, the U-Net over the stacked window: ``window`` beside the emulator's ``channels``, ``grid`` and
``normalisation``).

:func:`check_compatible` refuses inputs whose channels or grid differ, with an
:class:`~pipeline.errors.InputError` naming the difference and the fix. Files are written to a
temporary name and renamed (atomic).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..data.atomic import write_file
from ..errors import InputError
from .normalisation import Normalisation
from .unet import SphereUNet, UNetConfig
from .window_conv import WindowConv, WindowConvConfig
from .window_mlp import WindowMLP, WindowMLPConfig
from .window_unet import WindowUNet, WindowUNetConfig

FORMAT = "diffda-neural/1"
WEIGHTS, META = "model.safetensors", "meta.json"
Channel = tuple[str, float | None]


@dataclass(frozen=True)
class GridLayout:
    """Channel order and grid of a ``[T, C, H, W]`` tensor: ``channels[c] = (variable, level)``.

    ``level`` is in hPa, ``None`` for single-level fields; ``latitude`` ``[H]`` and ``longitude``
    ``[W]`` in degrees, in the order of the tensor's rows and columns.
    """

    channels: tuple[Channel, ...]
    latitude: tuple[float, ...]
    longitude: tuple[float, ...]
    attrs: dict = field(default_factory=dict, compare=False)

    @property
    def variables(self) -> list[str]:
        return list(dict.fromkeys(v for v, _ in self.channels))

    @property
    def levels(self) -> list[float]:
        return sorted({lv for _, lv in self.channels if lv is not None})

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.channels), len(self.latitude), len(self.longitude)

    def channel_names(self) -> list[str]:
        return [v if lv is None else f"{v}@{_fmt_level(lv)}" for v, lv in self.channels]

    @classmethod
    def from_meta(cls, meta: dict) -> "GridLayout":
        return cls(tuple((c[0], None if c[1] is None else float(c[1])) for c in meta["channels"]),
                   tuple(meta["grid"]["latitude"]), tuple(meta["grid"]["longitude"]))


def _fmt_level(lv: float) -> str:
    return f"{int(lv)}" if float(lv).is_integer() else f"{lv:g}"


FILE_MODE = 0o644  # safetensors creates its file 0600; checkpoints are shared and shipped


def make_meta(config: UNetConfig, layout: GridLayout, normalisation: Normalisation, *,
              schedule: dict | None = None, residual: bool = True, sigma_min: float = 1e-3,
              sigma_max: float = 100.0, step: int = 0, training: dict | None = None) -> dict:
    """The ``meta.json`` dictionary (plain JSON types)."""
    if normalisation.channels != config.channels or len(layout.channels) != config.channels:
        raise ValueError(f"channels disagree: network {config.channels}, layout {len(layout.channels)}, "
                         f"normalisation {normalisation.channels}")
    return {
        "format": FORMAT,
        "software": {"diffda": __version__, "torch": torch.__version__},
        "architecture": {"kind": "sphere-unet", **config.to_dict()},
        **grid_meta(layout, normalisation),
        "schedule": schedule or {"kind": "edm", "params": {"sigma_min": 2e-3, "sigma_max": 80.0}},
        "preconditioning": {"residual": residual, "sigma_min": sigma_min, "sigma_max": sigma_max},
        "history": config.history,
        "training": {"step": step, **(training or {})},
    }


def grid_meta(layout: GridLayout, normalisation: Normalisation) -> dict:
    """The ``channels``, ``variables``, ``levels``, ``grid`` and ``normalisation`` entries of a gridded
    network's ``meta.json`` (the emulator's and the smoother's window U-Net's; :func:`check_compatible`)."""
    return {
        "channels": [[v, lv] for v, lv in layout.channels],
        "variables": layout.variables,
        "levels": layout.levels,
        "grid": {"latitude": [float(x) for x in layout.latitude], "longitude": [float(x) for x in layout.longitude]},
        "normalisation": normalisation.to_dict(),
    }


def save_checkpoint(path: str | Path, net: nn.Module, meta: dict,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``path/model.safetensors`` (``state_dict`` or the net's) and ``path/meta.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else net.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    write_file(path / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}), FILE_MODE)
    write_file(path / META, lambda p: p.write_text(json.dumps(meta, indent=1)), FILE_MODE)
    return path


KIND_USE = {"sphere-unet": "the gridded emulator (diffda run on sphere/era5 data)",
            "window-mlp": "the smoother's window prior (diffda smooth on a twin)",
            "window-conv": "the smoother's window prior on a ring (diffda smooth on lorenz96 or linear)",
            "window-unet": "the smoother's window prior on a grid (diffda smooth on sphere/era5 data)"}
WINDOW_KINDS = ("window-mlp", "window-conv")  # the smoother's window networks (trained on a twin)
GRID_WINDOW_KINDS = ("window-unet",)  # the smoother's window network on a grid (trained on a gridded store)
CONFIGS = {"sphere-unet": UNetConfig, "window-mlp": WindowMLPConfig, "window-conv": WindowConvConfig,
           "window-unet": WindowUNetConfig}  # kind -> config
NETWORKS = {UNetConfig: SphereUNet, WindowMLPConfig: WindowMLP, WindowConvConfig: WindowConv,
            WindowUNetConfig: WindowUNet}  # config -> network


def kind_of(config: UNetConfig | WindowMLPConfig | WindowConvConfig | WindowUNetConfig) -> str:
    """``architecture.kind`` of ``config``."""
    return next(kind for kind, cls in CONFIGS.items() if type(config) is cls)


def network_of(config: UNetConfig | WindowMLPConfig | WindowConvConfig | WindowUNetConfig) -> nn.Module:
    """A fresh network of ``config`` (its type names the kind)."""
    return NETWORKS[type(config)](config)


def read_meta(path: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """``path/meta.json``, checked; with ``kind`` (one or several), refuse a checkpoint of another network kind."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise InputError(f"{path} is not a neural checkpoint (no {META}); train one with "
                         f"`diffda train --data DIR --out {path}` or set model.checkpoint to a checkpoint directory")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise InputError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}; retrain with this diffda version")
    got = meta.get("architecture", {}).get("kind", "sphere-unet")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and got not in kinds:
        raise InputError(f"model.checkpoint={path} holds a {got} network, {KIND_USE.get(got, 'unknown here')}; "
                         f"this run needs a {' or '.join(kinds)} network, {KIND_USE[kinds[0]]}")
    return meta


def build_network(architecture: dict) -> nn.Module:
    """A fresh network of ``architecture`` (``meta.json``'s, with its ``kind``)."""
    kind = architecture.get("kind", "sphere-unet")
    if kind not in CONFIGS:
        raise InputError(f"unknown network kind {kind!r} in meta.json (known: {', '.join(CONFIGS)}); "
                         f"retrain with this diffda version")
    return network_of(CONFIGS[kind].from_dict({k: v for k, v in architecture.items() if k != "kind"}))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The network (eval mode, on ``device``) and its metadata."""
    path = Path(path)
    meta = read_meta(path)
    net = build_network(meta["architecture"])
    weights = path / WEIGHTS
    if not weights.is_file():
        raise InputError(f"{path} has {META} but no {WEIGHTS}; the checkpoint is incomplete, copy it again or retrain")
    net.load_state_dict(load_file(str(weights), device="cpu"))
    return net.to(device).eval(), meta


def _describe_axis(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "empty"
    return f"{v.size} points, {v[0]:g} .. {v[-1]:g}"


def _axis_problem(name: str, want: Sequence[float], got: Sequence[float], tol: float) -> str | None:
    w, g = np.asarray(want, dtype=float), np.asarray(got, dtype=float)
    if w.shape == g.shape and np.allclose(w, g, atol=tol, rtol=0):
        return None
    if w.shape == g.shape and np.allclose(w, g[::-1], atol=tol, rtol=0):
        return (f"{name} runs the other way: the checkpoint has {_describe_axis(w)}, the inputs "
                f"{_describe_axis(g)}; reverse it in the reader (e.g. ds.sortby('{name}'{', ascending=False' if w[0] > w[-1] else ''}))")
    return (f"{name} differs: the checkpoint was trained on {_describe_axis(w)}, the inputs have "
            f"{_describe_axis(g)}; regrid the inputs to the checkpoint's grid or train a checkpoint on "
            f"this grid (`diffda train --data DIR --out DIR`)")


def check_compatible(meta: dict, layout: GridLayout, tol: float = 1e-4) -> None:
    """Raise :class:`InputError` unless ``layout`` has the checkpoint's channels (same order) and grid."""
    want = GridLayout.from_meta(meta)
    problems: list[str] = []
    if want.channels != layout.channels:
        wv, gv = want.variables, layout.variables
        missing = [v for v in wv if v not in gv]
        extra = [v for v in gv if v not in wv]
        if missing:
            problems.append(f"variables missing from the inputs: {', '.join(missing)}")
        if extra:
            problems.append(f"variables the checkpoint does not know: {', '.join(extra)}")
        if want.levels != layout.levels:
            wl, gl = set(want.levels), set(layout.levels)
            problems.append(
                f"levels differ: the checkpoint has {', '.join(map(_fmt_level, want.levels)) or 'none'} hPa, "
                f"the inputs {', '.join(map(_fmt_level, layout.levels)) or 'none'} hPa"
                + (f" (missing {', '.join(map(_fmt_level, sorted(wl - gl)))})" if wl - gl else "")
                + (f" (extra {', '.join(map(_fmt_level, sorted(gl - wl)))})" if gl - wl else ""))
        if not problems:
            if set(want.channels) == set(layout.channels):
                problems.append("the channels are the same but in another order; read them in the checkpoint's "
                                f"order: {', '.join(want.channel_names())}")
            else:
                wc, gc = set(want.channel_names()), set(layout.channel_names())
                problems.append(f"channels differ: missing {', '.join(sorted(wc - gc)) or 'none'}, "
                                f"extra {', '.join(sorted(gc - wc)) or 'none'}")
        problems[-1] += "; select the checkpoint's variables and levels when reading the inputs or train a checkpoint on these"
    for name, w, g in (("latitude", want.latitude, layout.latitude), ("longitude", want.longitude, layout.longitude)):
        p = _axis_problem(name, w, g, tol)
        if p:
            problems.append(p)
    if problems:
        grid = lambda lay: f"{len(lay.longitude)}x{len(lay.latitude)}"  # noqa: E731
        raise InputError(
            f"the neural checkpoint does not fit the inputs (checkpoint: {len(want.channels)} channels on a "
            f"{grid(want)} grid; inputs: {len(layout.channels)} channels on a {grid(layout)} grid):\n  "
            + "\n  ".join(problems))

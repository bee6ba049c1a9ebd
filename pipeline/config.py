r"""The one configuration model, validated once at the edge (CLI or job submission).

A config is YAML (or nothing: the embedded default) plus ``--set key=value`` overrides with
dotted keys. Unknown keys and bad values fail before any work with a message naming the key.
The core never sees this model's dicts: :mod:`pipeline.run` turns it into plain objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from .errors import DiffdaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(DiffdaError, ValueError):
    """A configuration problem, with a message naming the key and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    preset: Literal["linear", "lorenz96", "lorenz63", "sphere", "era5"] = "lorenz96"
    dir: Path | None = Field(None, description="inputs (truth.zarr, observations.zarr); made when absent")
    params: dict[str, Any] = Field(default_factory=dict, description="make-data keys, e.g. {cycles: 200}")
    # gridded data (sphere, era5): pipeline.data.gridded
    store: str | None = Field(None, description="reference store, path or fsspec URL; default DIR/truth.zarr")
    observations: str | None = Field(None, description="observations store, path or URL; default DIR/observations.zarr")
    statistics: Path | None = Field(None, description="normalisation statistics (diffda prepare); default DIR/statistics.json")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for URL stores")
    variables: list[str] | None = Field(None, description="state variables (ERA5 long names); default all")
    levels: list[float] | None = Field(None, description="pressure levels in hPa; default all")
    start: str | None = Field(None, description="first reference time of the window (ISO 8601)")
    stop: str | None = Field(None, description="last reference time of the window (ISO 8601)")
    regrid: bool = Field(False, description="regrid the reference to the neural checkpoint's grid")
    noise_std: dict[str, float] = Field(default_factory=dict, description="observation noise std per variable "
                                        "(overrides the store's noise_std attributes)")
    prefetch: int = Field(1, ge=0, description="cycles of input read ahead in the background")


class ScheduleConfig(Section):
    kind: Literal["vp-linear", "vp-cosine", "ve", "edm"] = "vp-cosine"
    params: dict[str, float] = Field(default_factory=dict)


class SamplerConfig(Section):
    steps: int = Field(64, ge=1, description="reverse-diffusion steps per propagation")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="0 = probability-flow ODE (DDIM), 1 = reverse SDE (DDPM)")
    corrections: int = Field(0, ge=0, description="Langevin corrections between steps")
    delta: float = Field(0.1, gt=0.0, description="Langevin step size as a fraction of sigma_t^2")
    t_min: float = Field(1e-3, gt=0.0, lt=1.0, description="last diffusion time of the grid")
    grid: Literal["uniform", "log-snr"] = "uniform"
    exact: bool = Field(True, description="unguided propagation in one exact draw when the denoiser "
                        "can draw its transition (the twins' Gaussian denoiser); false = reverse diffusion")


class GuidanceConfig(Section):
    method: Literal["dps", "sda", "mmps"] = "mmps"
    cg_iterations: int = Field(8, ge=1, description="MMPS conjugate-gradient iterations")
    covariance: Literal["jacobian", "diagonal"] = Field(
        "jacobian", description="MMPS covariance (and inflated weights): Tweedie's from the denoiser's "
        "Jacobian, or the denoiser's diagonal variance model (no VJPs; for neural emulators)")
    gamma: float = Field(1e-2, gt=0.0, description="SDA prior covariance scale Gamma = gamma I")
    scale: float = Field(1.0, gt=0.0, description="DPS step multiplier")


class ModelConfig(Section):
    kind: Literal["gaussian", "kde", "neural"] = "gaussian"
    archive: int = Field(4096, ge=16, description="KDE: archive size: (x^k, x^{k+1}) pairs in the filter; "
                         "windows of 2k+1 states in diffda smooth (local patches with model.patch)")
    bandwidth: float | Literal["cv"] | None = Field(
        None, description="KDE: bandwidth factor on Scott's rule; None = Scott's rule (1); cv (diffda smooth's "
        "window prior): the factor maximising the held-out log-density of windows of other runs of the chain "
        "(likelihood cross-validation, pipeline/smoothers/kde.py)")
    patch: int | None = Field(None, ge=0, description="KDE in diffda smooth on the Lorenz-96 ring: half-width r of "
                              "the local patches (2r+1 positions; model.archive patches drawn from every position of "
                              "as many archive windows); None = the whole state")
    checkpoint: Path | None = Field(None, description="neural: checkpoint directory (gridded emulator; in diffda "
                                    "smooth, the window network: window-mlp/window-conv on a twin, window-unet on a grid)")

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, (int, float)) and v <= 0:
            raise ValueError("the bandwidth factor must be > 0, cv or null (Scott's rule)")
        return v


class FilterConfig(Section):
    method: Literal["pf-optimal", "pf-bootstrap", "etkf", "letkf", "pf-local", "free", "kde"] = Field(
        "pf-optimal", description="pf-optimal | pf-bootstrap | etkf | letkf | pf-local | free (no observations: the baseline) | "
        "kde (closed-form conditional diffusion filter, Binder & Oberai)")
    particles: int = Field(64, ge=1)
    weights: Literal["seed", "inflated"] = "inflated"
    tempering: Literal["none", "adaptive"] = Field(
        "none", description="adaptive: weights p(y|x)^alpha, the largest alpha in (0, 1] keeping ESS/N in target_ess")
    target_ess: tuple[float, float] = Field((0.2, 0.25), description="tempering: the ESS band, fractions of N")
    resample_threshold: float = Field(0.5, ge=0.0, le=1.0, description="resample when ESS/N falls below")
    regularization: float = Field(0.0, ge=0.0, description="jitter scale 'reg' (DAPPER); 0 = off")
    inflation: float = Field(1.0, ge=1.0, description="etkf, letkf: multiplicative inflation of the prior anomalies; pf-local: of the resampled spread")
    kde_bandwidth_x: float = Field(1.0, gt=0.0, description="kde: state bandwidth factor on Scott's rule")
    kde_bandwidth_y: float = Field(1.0, gt=0.0, description="kde: measurement bandwidth factor on Scott's rule")
    localization_radius: float | Literal["auto"] | None = Field(
        None, description="letkf, pf-local: Gaspari-Cohn half-width c (zero beyond 2c): ring index "
        "distance on twins, great-circle km on grids (DAPPER's loc_rad = c / 1.82); None = infinite; auto = "
        "localization_spacings times the mean spacing of the first cycle's observed columns (pipeline/filters/localisation.py)")
    localization_spacings: float = Field(
        0.75, gt=0.0, description="localization_radius=auto: the half-width in mean observation spacings")
    rtps: float = Field(0.0, ge=0.0, le=1.0, description="letkf: relaxation to prior spread (Whitaker & Hamill 2012); pf-local: of the resampled spread")
    transform: Literal["resample", "netf"] = Field(
        "resample", description="pf-local: how the local weights move the particles: resample (local systematic "
        "resampling blended over neighbouring columns) | netf (the deterministic second-order transform of the "
        "local weights, Toedter & Ahrens 2015: weighted mean and covariance exactly, no duplicates)")
    hybrid: float = Field(
        0.0, ge=0.0, le=1.0, description="pf-local (transform=netf; other methods ignore it): h of the hybrid particle-Kalman update "
        "(Nerger 2022's LKNETF): per column the share gamma = h (1 - ESS/N) of the likelihood goes to a local ETKF "
        "step after the NETF (pipeline/filters/hybrid.py); 0 = the particle filter alone")
    additive_inflation: float = Field(
        0.0, ge=0.0, description="scale a of the additive model-error perturbations of the carried ensemble "
        "(recentred draws with the covariance of the model-error samples; pipeline/filters/additive.py); 0 = off")
    model_error: Path | None = Field(
        None, description="additive inflation: the model-error samples (model_error.npz, `diffda model-error`); "
        "None = the one beside model.checkpoint (the shipped emulator's for the sphere preset)")
    static_gain: float = Field(
        0.0, ge=0.0, le=1.0, description="beta of the hybrid-gain correction of the analysis mean by a static "
        "covariance from tendency samples (pipeline/filters/static_gain.py): every member shifted by "
        "beta (B o C) H^T [H (B o C) H^T + R]^-1 (y - H xbar^a); 0 = off")
    static_scale: float = Field(1.0, gt=0.0, description="static_gain: s of B = s^2 Cov(samples)")
    static_radius: float | Literal["auto"] | None = Field(
        None, description="static_gain: Gaspari-Cohn half-width of B's localisation (zero beyond 2c; ring "
        "index distance on twins, great-circle km on grids); None = infinite; auto = static_spacings times the "
        "mean observation spacing, as localization_radius=auto")
    static_spacings: float = Field(
        1.5, gt=0.0, description="static_radius=auto: the half-width in mean observation spacings")
    static_samples: Path | None = Field(
        None, description="static_gain: the tendency samples (static_samples.npz, `diffda static-samples`); None = the "
        "one beside model.checkpoint (the shipped emulator's for the sphere preset)")
    spinup: int = Field(0, ge=0, description="cycles left out of the summary metrics")
    init_std: float = Field(1.0, ge=0.0, description="initial ensemble: truth at cycle 0 plus N(0, init_std^2)")
    init_climatology: Path | None = Field(
        None, description="a climatological initial ensemble instead: member i is the state (with its history) of "
        "this store at a time drawn for particle i (seeded by run.seed), so the filter starts with no knowledge of "
        "the truth and must converge. Gridded data: an ERA5-layout store (or a data directory's truth.zarr) with "
        "the data's variables, levels and grid; twins: another run of the same system (a data directory of "
        "`diffda make-data` with another seed). None = truth at cycle 0 plus N(0, init_std^2)")


    @field_validator("localization_radius", "static_radius")
    @classmethod
    def _radius(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, (int, float)) and v <= 0:
            raise ValueError("a radius must be > 0 (km on grids, index distance on twins), auto or null (infinite)")
        return v

    @field_validator("target_ess")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"need 0 < lo <= hi <= 1 (fractions of N), e.g. [0.2, 0.25]; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _hybrid(self) -> "FilterConfig":
        if self.hybrid > 0 and self.method == "pf-local":  # other methods ignore it, as they do transform
            if self.transform != "netf":
                raise ValueError(f"filter.hybrid={self.hybrid} is the hybrid update of pf-local's NETF transform: set "
                                 f"filter.transform=netf (got {self.transform}), or filter.hybrid=0")
            if self.tempering != "none":
                raise ValueError("filter.hybrid > 0 already tempers pf-local's particle step (by 1 - gamma): set "
                                 "filter.tempering=none")
        return self


class RunConfig(Section):
    seed: int = 0
    device: str = "auto"
    dtype: Literal["float64", "float32", "bfloat16"] = "float64"
    micro_batch: int = Field(0, ge=0, description="particles per denoiser batch; 0 = automatic")
    cycles: int | None = Field(None, ge=1, description="assimilate only the first N cycles")
    start: int = Field(0, ge=0, description="window start: skip the first N cycles of the data "
                       "(the initial state is the one after them)")
    init: Path | None = Field(None, description="start from the final particles of this earlier run "
                              "(its output directory) instead of a fresh ensemble")
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    checkpoint_every: int = Field(1, ge=1, description="checkpoint (and write the analysis of the cycles since) every N cycles")
    members: bool = False
    free_baseline: bool = Field(False, description="also run the same ensemble without observations (same "
                                "seeds) and report its error beside the analysis (rmse_free, maps.png)")


class SmootherConfig(Section):
    """``diffda smooth``: the trajectory posterior of the window ``run.start .. run.start + run.cycles``."""

    window_half_width: int = Field(2, ge=0, description="k: the window denoiser spans 2k+1 consecutive states")
    samples: int = Field(64, ge=1, description="S: trajectories sampled (sharded over ranks)")
    block: int = Field(0, ge=0, description="states per sampled block (0 = the whole window in one block)")
    overlap: int = Field(0, ge=0, description="states added on each side of a block's kept core, then discarded")
    batch: int = Field(0, ge=0, description="samples per sampler batch; 0 = a rank's samples at once")
    jacobian: Literal["windows", "symmetric", "composed"] = Field(
        "windows", description="MMPS covariance=jacobian over the composed prior: windows = the window "
        "denoisers' Tweedie covariances averaged over their overlaps (symmetric, PSD); symmetric = (J + J^T)/2 "
        "of the composed Jacobian J; composed = J itself (not symmetric when 2k+1 < the window)")


class Config(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    guidance: GuidanceConfig = Field(default_factory=GuidanceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    smoother: SmootherConfig = Field(default_factory=SmootherConfig)

    @field_validator("guidance", mode="before")
    @classmethod
    def _guidance_shorthand(cls, v: Any) -> Any:
        return {"method": v} if isinstance(v, str) else v

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.model.kind == "neural" and self.data.preset not in ("sphere", "era5") and self.model.checkpoint is None:
            raise ValueError(f"model=neural on a twin (data.preset={self.data.preset}) is diffda smooth's trained "
                             f"window prior: set model.checkpoint=DIR (diffda train --set kind=window-mlp or kind=window-conv)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalars (``12``, ``0.5``, ``true``, ``null``, ``[1, 2]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (shorthands ``guidance=mmps`` expand)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set filter.particles=100")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if isinstance(nxt, str):  # shorthand such as guidance: mmps
                nxt = {"method" if p == "guidance" else "kind": nxt}
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")
            node[p] = nxt
            node = nxt
        node[parts[-1]] = parse_value(value)
    return raw


def _nearest(loc: tuple) -> str:
    """`` (did you mean 'filter.particles'?)`` for a misspelt key, from the model's own fields."""
    import difflib

    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return ""
        model = field.annotation
    near = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?)" if near else ""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}: remove it or check its spelling{_nearest(e['loc'])}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """Read YAML (optional), apply overrides, validate; raise :class:`ConfigError` on any problem."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
        raw.update(loaded)
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None

r"""From (config, profile) to submitted jobs: the checks first, then submitit.

:func:`check` gathers every problem before anything is submitted, each with a message naming
the key and the fix: GPUs per node vs tasks (one task per GPU), particles vs ranks, the time
limit vs the estimated run time, the input and output paths the compute nodes must see, and
profile keys SLURM would reject (unknown keys, unknown partition, a time over the partition's
limit; :mod:`jobs.profiles` does the rest). Warnings are returned, errors raised together.

:func:`make_executor` turns a profile into a submitit executor: ``SlurmExecutor`` with one task
per GPU, the profile's ``srun`` arguments and set-up lines, ``USR2`` ``signal_delay_s`` before the
time limit; or submitit's ``LocalExecutor`` for ``executor: local``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import DiffdaError

from .assimilate import Assimilate
from .profiles import Profile, python_for
from .smooth import Smooth
from . import slurmctl

KINDS = {"run": Assimilate, "smooth": Smooth}  # job kind -> its submitit job (and pipeline entry)

STARTUP_S = 60.0  # queue-to-first-cycle overhead assumed by the time check (imports, rendezvous, data)
NODE_LOCAL = ("/tmp", "/dev/shm", "/var/tmp", "/scratch/local", "/local")


class SubmitError(DiffdaError):
    """The job would fail or be rejected: every reason, one per line."""


@dataclass
class RunSpec:
    """One job to submit (a run, or a smoothing window): validated config, absolute paths, how long
    it should take."""

    config: Path | None
    overrides: list[str]
    cfg: Config
    data_dir: Path
    out_dir: Path
    kind: str = "run"  # a key of KINDS
    cycles: int | None = None  # cycles to assimilate, when known (a smoothing window: one unit)
    cycle_seconds: float | None = None  # estimated seconds per cycle on the profile's ranks
    estimate_source: str = "heuristic"
    notes: list[str] = field(default_factory=list)

    @property
    def ensemble(self) -> tuple[str, int]:
        """(key, size) of what is sharded over the ranks: the particles, or the smoother's samples."""
        if self.kind == "smooth":
            return "smoother.samples", self.cfg.smoother.samples
        return "filter.particles", self.cfg.filter.particles

    @property
    def run_seconds(self) -> float | None:
        if self.cycles is None or self.cycle_seconds is None:
            return None
        return self.cycles * self.cycle_seconds


def data_cycles(cfg: Config, data_dir: Path) -> tuple[int | None, int]:
    """(cycles in the data or None, state size) without loading it (Zarr metadata only).

    Without data yet, both come from the preset's own defaults (``data.params`` over
    :data:`pipeline.data.twins.DEFAULTS` or :data:`pipeline.data.sphere.DEFAULTS`): the sphere state
    is variables x pressure levels x 32 x 64 (its sigma ``layers`` are the model's, not the state's).
    """
    obs = data_dir / "observations.zarr"
    if obs.exists():
        try:
            import xarray as xr

            ds = xr.open_zarr(obs)
            numel = int(math.prod(s for d, s in ds.sizes.items() if d != "time")) or 40
            return int(ds.sizes["time"]), numel
        except Exception:  # noqa: BLE001  (the job itself will report a bad store)
            return None, 40
    params = dict(cfg.data.params)
    try:
        if cfg.data.preset in ("linear", "lorenz96", "lorenz63"):
            from pipeline.data.twins import twin_params

            p = twin_params(cfg.data.preset, params)
            return int(p["cycles"]), int(p["dim"])
        if cfg.data.preset == "sphere":
            from pipeline.data import sphere

            p = sphere.sphere_params(params)
            return int(p["days"]) * 24 // sphere.CYCLE_HOURS, len(sphere.VARIABLES) * len(p["levels"]) * 32 * 64
    except DiffdaError:
        pass  # the job reports bad make-data keys itself
    return None, 40


def estimate_cycle_seconds(cfg: Config, members: int, ranks: int, numel: int, out_dir: Path) -> tuple[float, str]:
    """Seconds per cycle of ``members`` states of ``numel`` values: measured by an earlier run in
    ``out_dir`` if any, else a rough CPU model."""
    metrics = out_dir / "metrics.json"
    if metrics.exists():
        try:
            m = json.loads(metrics.read_text())
            if m.get("cycles"):
                return float(m["wall_seconds"]) / int(m["cycles"]), f"measured ({metrics})"
        except (ValueError, KeyError, TypeError):
            pass
    n_local = math.ceil(members / ranks)
    evals = cfg.sampler.steps * (1 + cfg.sampler.corrections) + 2
    guidance = 1.0 if cfg.guidance.method == "dps" else 2.0 + 0.1 * cfg.guidance.cg_iterations
    per_eval = 2e-3 + 2e-8 * n_local * numel * guidance
    return evals * per_eval + 0.01, "heuristic"


def resolve_run(config: Path | None, overrides: list[str], data: Path | None, out: Path | None,
                preset: str | None = None, kind: str = "run") -> RunSpec:
    """Validate the config as the job kind's command does; absolute data and output directories."""
    overrides = ([f"data.preset={preset}"] if preset else []) + list(overrides)  # the job gets them all
    cfg, data_dir, out_dir = KINDS[kind].entry().resolve_inputs(config, overrides, data, out)
    return RunSpec(None if config is None else Path(config).resolve(), overrides, cfg,
                   Path(data_dir).resolve(), Path(out_dir).resolve(), kind)


def _node_local(path: Path) -> bool:
    s = str(path)
    tmp = os.environ.get("TMPDIR")
    prefixes = NODE_LOCAL + ((tmp,) if tmp else ())
    return any(s == p or s.startswith(p.rstrip("/") + "/") for p in prefixes)


def _creatable(path: Path) -> bool:
    p = path
    while not p.exists():
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def check(profile: Profile, spec: RunSpec, cycle_seconds: float | None = None) -> list[str]:
    """Raise :class:`SubmitError` listing every problem; return warnings."""
    errors: list[str] = []
    warnings: list[str] = []
    cfg = spec.cfg
    ranks = profile.ranks
    p = f"profile {profile.name!r}"

    # GPUs per node vs tasks: one task per GPU
    if profile.gpus_per_node and profile.tasks_per_node != profile.gpus_per_node:
        errors.append(f"{p}: tasks_per_node={profile.tasks_per_node} but gpus_per_node={profile.gpus_per_node}; "
                      f"diffda runs one task per GPU: set tasks_per_node: {profile.gpus_per_node}")
    if not profile.gpus_per_node and (cfg.run.device == "cuda" or cfg.run.device.startswith("cuda:")):
        errors.append(f"run.device={cfg.run.device} but {p} asks for no GPUs: set gpus_per_node, or run.device=auto")
    if cfg.run.backend == "nccl" and not profile.gpus_per_node:
        errors.append(f"run.backend=nccl needs GPUs but {p} has gpus_per_node=0: use run.backend=auto or gloo")

    # particles (or samples) vs ranks
    key, members = spec.ensemble
    if members < ranks:
        errors.append(f"{key}={members} is fewer than the {ranks} ranks of {p} "
                      f"({profile.nodes} node(s) x {profile.tasks_per_node} tasks): raise {key} to at "
                      f"least {ranks} or use fewer nodes/tasks")
    elif members % ranks:
        warnings.append(f"{key}={members} does not divide over {ranks} ranks: some ranks hold one more")

    # paths the compute nodes must see
    local = profile.executor == "local"
    data_ok = (spec.data_dir / "observations.zarr").exists() and (spec.data_dir / "truth.zarr").exists()
    if not data_ok:
        if cfg.data.preset in ("linear", "lorenz96", "lorenz63") and _creatable(spec.data_dir):
            warnings.append(f"no inputs in {spec.data_dir}: the job makes the {cfg.data.preset} twin there first")
        else:
            errors.append(f"input directory {spec.data_dir} has no truth.zarr/observations.zarr and cannot be made "
                          f"there: pass --data DIR with inputs (diffda make-data PRESET --out DIR)")
    if not _creatable(spec.out_dir):
        errors.append(f"output directory {spec.out_dir} cannot be created (no write permission): choose another --out")
    for key, value in (("model.checkpoint", cfg.model.checkpoint), ("run.init", cfg.run.init),
                       ("filter.init_climatology", cfg.filter.init_climatology),
                       ("filter.model_error", cfg.filter.model_error), ("filter.static_samples", cfg.filter.static_samples)):
        if value is None:
            continue
        path = Path(value)
        if not path.is_absolute():
            warnings.append(f"{key}={value} is relative: the job resolves it against its working directory "
                            f"({Path.cwd()}); an absolute path is safer")
            path = Path.cwd() / path
        if not path.exists() and key != "run.init":  # run.init may be a window that has not run yet
            errors.append(f"{key}={value} does not exist ({path})")
    if spec.config is not None and not spec.config.is_file():
        errors.append(f"config file {spec.config} not found")
    if not local:
        for what, path in (("--data", spec.data_dir), ("--out", spec.out_dir), ("config", spec.config)):
            if path is not None and _node_local(path):
                warnings.append(f"{what} {path} is on a node-local file system; compute nodes may not see it: "
                                f"use a shared directory (home, project or scratch)")
    py = Path(python_for(profile))
    if not py.exists():
        errors.append(f"{p}: python {py} does not exist here; set 'python:' to the interpreter on the compute nodes")

    # SLURM's own limits: partition, its time limit
    if profile.executor == "slurm":
        parts = slurmctl.partitions()
        if parts is None:
            warnings.append("no SLURM commands here (scontrol): the profile is not checked against the cluster")
        elif profile.partition is not None and profile.partition not in parts:
            errors.append(f"{p}: partition {profile.partition!r} does not exist on this cluster "
                          f"(partitions: {', '.join(sorted(parts))})")
        elif parts:
            part = parts.get(profile.partition) if profile.partition else next(
                (v for v in parts.values() if v.get("Default") == "YES"), None)
            if part is not None:
                max_time = part.get("MaxTime", "UNLIMITED")
                if max_time not in ("UNLIMITED", "INFINITE"):
                    from .profiles import parse_time_minutes

                    try:
                        limit = parse_time_minutes(max_time)
                    except ValueError:
                        limit = None
                    if limit is not None and profile.minutes > limit:
                        errors.append(f"{p}: time={profile.time} exceeds partition {part['PartitionName']}'s "
                                      f"MaxTime {max_time}: lower 'time'")
                max_nodes = part.get("MaxNodes", "UNLIMITED")
                if max_nodes.isdigit() and profile.nodes > int(max_nodes):
                    errors.append(f"{p}: nodes={profile.nodes} exceeds partition {part['PartitionName']}'s "
                                  f"MaxNodes {max_nodes}")

    # time limit vs estimated run time
    n_cycles, numel = data_cycles(cfg, spec.data_dir)
    n_cycles = cfg.run.cycles or (None if n_cycles is None else max(n_cycles - cfg.run.start, 0))
    unit = "cycle"
    if spec.kind == "smooth":  # one unit of work: every state of the window in each sample
        from pipeline.smoothers.window import check_length

        if n_cycles is not None:
            try:
                check_length(cfg.smoother.window_half_width, n_cycles)
            except DiffdaError as err:
                errors.append(str(err))
        numel, n_cycles, unit = numel * (n_cycles or 1), 1, "window"
    spec.cycles = n_cycles
    if cycle_seconds is not None:
        spec.cycle_seconds, spec.estimate_source = cycle_seconds, "given"
    else:
        spec.cycle_seconds, spec.estimate_source = estimate_cycle_seconds(cfg, members, ranks, numel, spec.out_dir)
    limit_s = profile.minutes * 60.0
    usable = limit_s - profile.signal_delay_s
    if usable < STARTUP_S + spec.cycle_seconds:
        errors.append(f"{p}: time={profile.time} leaves {usable:.0f} s after the {profile.signal_delay_s} s signal "
                      f"margin, less than start-up ({STARTUP_S:.0f} s) plus one {unit} ({spec.cycle_seconds:.1f} s, "
                      f"{spec.estimate_source}): no {unit} could finish; raise 'time'")
    elif spec.run_seconds is not None and STARTUP_S + spec.run_seconds > usable:
        parts_needed = math.ceil(spec.run_seconds / max(usable - STARTUP_S, 1.0))
        if parts_needed - 1 > profile.max_timeouts:
            errors.append(f"{p}: the run needs about {spec.run_seconds / 60:.0f} min ({spec.estimate_source}) but "
                          f"time={profile.time} allows {parts_needed - 1} requeues more than max_timeouts="
                          f"{profile.max_timeouts}: raise 'time' or 'max_timeouts'")
        else:
            warnings.append(f"estimated run time {spec.run_seconds / 60:.1f} min ({spec.estimate_source}) exceeds "
                            f"time={profile.time}: the job will checkpoint and requeue about {parts_needed - 1} time(s)")
    if errors:
        raise SubmitError("cannot submit:\n  " + "\n  ".join(errors))
    return warnings


def make_executor(profile: Profile, folder: Path, job_name: str = "diffda",
                  array_parallelism: int | None = None, dependency: str | None = None) -> Any:
    """A submitit executor for ``profile`` writing its pickles and logs under ``folder``."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    env_lines = [f"export {k}={_quote(v)}" for k, v in profile.env.items()]
    if profile.executor == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.max_timeouts, python=python_for(profile))
        ex.update_parameters(timeout_min=profile.minutes, tasks_per_node=profile.tasks_per_node, nodes=1,
                             gpus_per_node=profile.gpus_per_node, signal_delay_s=profile.signal_delay_s)
        os.environ.update(profile.env)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_timeouts, python=python_for(profile))
    additional = dict(profile.sbatch)
    additional.setdefault("requeue", True)
    if dependency:
        additional["dependency"] = dependency
        additional.setdefault("kill-on-invalid-dep", "yes")
    params: dict[str, Any] = dict(
        job_name=job_name, time=profile.minutes, nodes=profile.nodes, ntasks_per_node=profile.tasks_per_node,
        cpus_per_task=profile.cpus_per_task, setup=env_lines + list(profile.setup), srun_args=_srun_args(profile),
        signal_delay_s=profile.signal_delay_s, additional_parameters=additional, stderr_to_stdout=False,
    )
    for key in ("partition", "account", "qos", "constraint", "mem", "mem_per_cpu"):
        value = getattr(profile, key)
        if value is not None:
            params[key] = value
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.exclusive:
        params["exclusive"] = True
    if array_parallelism is not None:
        params["array_parallelism"] = array_parallelism
    ex.update_parameters(**params)
    return ex


def _srun_args(profile: Profile) -> list[str]:
    """The profile's srun arguments, plus ``--kill-on-bad-exit=1`` (a dead rank ends the step at once)."""
    args = list(profile.srun_args)
    if not any(a.startswith(("--kill-on-bad-exit", "-K")) for a in args):
        args.append("--kill-on-bad-exit=1")
    return args


def _quote(v: str) -> str:
    import shlex

    return shlex.quote(str(v))


def read_result(path: Path) -> tuple[str, Any] | None:
    """submitit's result file: ``("success", value)`` or ``("error", traceback)``; None when absent."""
    if not Path(path).exists():
        return None
    try:
        import pickle

        with open(path, "rb") as f:
            kind, value = pickle.load(f)
    except Exception:  # noqa: BLE001  (half-written or foreign: treat as absent)
        return None
    return str(kind), value
